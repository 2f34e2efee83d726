"""Generative recall as a channel: semantic ids, a next-item transformer, constrained beam search."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch

from common.typedconf import from_mapping, require
from components.recall.base import read_state, write_state
from components.recall.generative.beam import Trie, beam_search
from components.recall.generative.embeddings import SOURCES, item_embeddings, text_encoder_installed
from components.recall.generative.item_model import (CodeTables, ItemGPT, item_beam_search, item_loss, item_rows,
                                                     item_target_nll, item_windows)
from components.recall.generative.model import GPT, GPTConfig
from components.recall.generative.quantize import Quantizer, QuantizerConfig
from components.recall.generative.remote import RecallClient
from components.recall.generative.semantic_ids import SemanticIds, build_semantic_ids
from components.recall.generative.train import (TrainConfig, history_tokens, item_tokens, level_loss, target_nll,
                                                train_gpt, training_sequences)
from components.types import Candidates, Catalog, TrainData, UserBatch


@dataclass(frozen=True)
class GenerativeConfig:
    embedding: str = "content"       # one of SOURCES: what semantic ids are quantised from
    collab_dim: int = 64             # collaborative embedding: SVD dimensions
    collab_window: int = 3           # collaborative embedding: items apart that count as co-occurring
    sequential_epochs: int = 30      # sequential embedding: epochs of the SASRec it is read from
    ids: QuantizerConfig = field(default_factory=QuantizerConfig)
    unique_slack: int = 8            # spare codes of the unique level for items arriving later
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    window_days: int = 14            # days of clicks the model learns from
    beam_width: int = 20             # 5..100: beams kept, and the most items one request returns
    serve_batch: int = 256           # requests decoded together
    device: str = "cpu"
    seed: int = 0
    # http://host:port of a recall server (components/serving/genserver.py) holding this channel's saved
    # model: histories are sent there and decoded in its batches instead of in this process.
    endpoint: str = ""

    def validate(self, where: str) -> None:
        require(self.embedding in SOURCES, f"{where}.embedding", f"'{self.embedding}' is not allowed; choose one of {list(SOURCES)}")
        require("text" not in self.embedding or text_encoder_installed(), f"{where}.embedding",
                f"'{self.embedding}' needs the text encoder, an optional extra: pip install -e '.[text]'")
        require(self.ids.method in ("rqvae", "rqkmeans"), f"{where}.ids.method", "choose 'rqvae' or 'rqkmeans'")
        require(self.ids.levels >= 1, f"{where}.ids.levels", "must be at least 1")
        require(2 <= self.ids.codebook_size <= 4096, f"{where}.ids.codebook_size", "must be between 2 and 4096")
        require(5 <= self.beam_width <= 100, f"{where}.beam_width", f"must be between 5 and 100, got {self.beam_width}")
        require(self.train.select_by in ("recall", "nll"), f"{where}.train.select_by",
                f"'{self.train.select_by}' is not allowed; choose 'recall' or 'nll'")
        require(self.model.arch in ("tokens", "items"), f"{where}.model.arch",
                f"'{self.model.arch}' is not allowed; choose 'tokens' or 'items'")
        require(self.model.d_model % self.model.n_head == 0, f"{where}.model.d_model", "must be a multiple of n_head")
        require(self.collab_dim >= 1 and self.collab_window >= 1, f"{where}.collab_dim",
                "collab_dim and collab_window must be at least 1")
        require(self.embedding != "sequential" or (self.collab_dim % 2 == 0 and self.sequential_epochs >= 1),
                f"{where}.collab_dim", "the sequential embedding (a 2-head SASRec) needs an even collab_dim "
                "and sequential_epochs of at least 1")
        require(self.window_days >= 1, f"{where}.window_days", "must be at least 1")
        require(not self.endpoint or (self.endpoint.startswith("http://") and len(self.endpoint) > 7),
                f"{where}.endpoint", f"'{self.endpoint}' is not an http://host:port address (or leave it empty)")


def _sequences(user: np.ndarray, item: np.ndarray) -> list[np.ndarray]:
    """Clicks in time order -> one chronological item array per user."""
    order = np.argsort(user, kind="stable")
    users, starts = np.unique(user[order], return_index=True)
    return np.split(item[order], starts[1:]) if len(users) else []


def _recall_at_10(model: torch.nn.Module, rows: np.ndarray, target: np.ndarray, search, device: str,
                  batch: int = 256) -> float:
    """Share of validation histories rows [V, T] whose next item target [V] is in the beam's top 10."""
    hits = 0
    for lo in range(0, len(rows), batch):
        found, _ = search(model, torch.from_numpy(rows[lo: lo + batch]).to(device))  # [b, W]
        hits += int((found[:, :10].cpu().numpy() == target[lo: lo + batch, None]).any(1).sum())
    return hits / max(len(rows), 1)


class GenerativeRecaller:
    name = "generative"

    def __init__(self, config: GenerativeConfig = GenerativeConfig()):
        self.config = config

    def _embed(self, catalog: Catalog, sequences: list[np.ndarray] | None) -> np.ndarray:
        titles = None if catalog.title is None else list(catalog.title)
        return item_embeddings(self.config.embedding, content=catalog.content, titles=titles,
                               sequences=sequences, n_items=catalog.n_items, dim=self.config.collab_dim,
                               window=self.config.collab_window, epochs=self.config.sequential_epochs,
                               seed=self.config.seed, device=self.config.device)

    def fit(self, data: TrainData) -> Self:
        keep = data.day - data.click_day < self.config.window_days
        return self.fit_sequences(_sequences(data.click_user[keep], data.click_item[keep]), data.catalog)

    def fit_sequences(self, sequences: list[np.ndarray], catalog: Catalog,
                      valid: tuple[list[np.ndarray], np.ndarray] | None = None) -> Self:
        """Fit from users' chronological item sequences (the offline benchmark's entry point).

        valid: held-out (chronological histories, next item) pairs; the model keeps the weights of
        the epoch whose next-item log-likelihood on them is best.
        """
        cfg, t0 = self.config, time.perf_counter()
        emb = self._embed(catalog, sequences)                                       # [I, d]
        ids = build_semantic_ids(emb, cfg.ids, cfg.seed, cfg.unique_slack)
        t1 = time.perf_counter()
        gcfg = GPTConfig(**{**asdict(cfg.model), "n_levels": ids.n_levels, "codebook_size": ids.codebook_size,
                            "n_items": ids.n_items})
        trie = Trie.build(ids.codes, ids.codebook_size).to(torch.device(cfg.device))
        tables = None
        if gcfg.arch == "items":
            model: torch.nn.Module = ItemGPT(gcfg).to(cfg.device)
            tables = CodeTables.build(ids.codes, trie)
            data = item_windows(sequences, ids.codes, gcfg.max_items)
            loss_fn = lambda m, x: item_loss(m, x, tables)  # noqa: E731
            nll_rows = lambda hs: item_rows(hs, ids.codes, gcfg.max_items + 1)  # noqa: E731
            nll = lambda m, rows: item_target_nll(m, rows, tables)  # noqa: E731
            search_rows = lambda hs: item_rows(hs, ids.codes, gcfg.max_items)  # noqa: E731
            search = lambda m, xb: item_beam_search(m, xb, tables, cfg.beam_width)  # noqa: E731
        else:
            model = GPT(gcfg).to(cfg.device)
            tokens = item_tokens(ids.codes, ids.codebook_size)                       # [I, L]
            data = training_sequences(sequences, tokens, gcfg.max_items)
            loss_fn = level_loss
            nll_rows = lambda hs: history_tokens(hs, tokens, gcfg.max_items + 1, left_pad=False)  # noqa: E731
            nll = lambda m, rows: target_nll(m, rows)  # noqa: E731
            search_rows = lambda hs: history_tokens(hs, tokens, gcfg.max_items, left_pad=True)  # noqa: E731
            search = lambda m, xb: beam_search(m, xb, trie, cfg.beam_width)  # noqa: E731
        validate = None
        if valid is not None and cfg.train.select_by == "nll":
            rows = nll_rows([np.append(h, t) for h, t in zip(*valid)])
            validate = lambda m: nll(m, rows)  # noqa: E731
        elif valid is not None:
            # The log-likelihood of the validation item bottoms out epochs before its ranking does
            # (on Beauty: best NLL at epoch 5-14, while recall@10 kept rising to the last epoch), so
            # by default the epoch is picked on what the channel is for: recall@10 of a beam search.
            rows, target = search_rows(valid[0]), np.asarray(valid[1])
            validate = lambda m: -_recall_at_10(m, rows, target, search, cfg.device)  # noqa: E731
        log = train_gpt(model, data, cfg.train, cfg.seed, validate, loss_fn) if len(data) else None
        losses = log.losses if log else []
        self.ids_, self.model_ = ids, model
        self._set_trie(trie, tables)
        self.metrics_ = {**{f"ids.{k}": v for k, v in ids.metrics(emb).items()},
                         "ids_seconds": t1 - t0, "model_seconds": time.perf_counter() - t1,
                         "train_loss": losses[-1] if losses else float("nan"),
                         "train_sequences": float(len(data)), "epochs_run": float(len(losses)),
                         **({"best_epoch": float(log.best_epoch),
                             ("valid_nll" if cfg.train.select_by == "nll" else "valid_recall@10"):
                                 abs(min(log.valid))} if log and log.valid else {}),
                         "parameters": float(sum(p.numel() for p in model.parameters()))}
        return self

    def _set_trie(self, trie: Trie, tables: CodeTables | None = None) -> None:
        self.trie_ = trie
        if tables is None and isinstance(self.model_, ItemGPT):
            tables = CodeTables.build(self.ids_.codes, trie)
        self.tables_ = tables

    def _add_new_items(self, catalog: Catalog) -> None:
        """Items that arrived after fitting get ids from their content; the model is unchanged."""
        known = self.ids_.n_items
        if catalog.n_items <= known:
            return
        emb = self._embed(catalog, None)[known:]
        self.ids_.add_items(emb)
        self._set_trie(Trie.build(self.ids_.codes, self.ids_.codebook_size).to(torch.device(self.config.device)))

    def recall(self, users: UserBatch, k: int) -> Candidates:
        if self.config.endpoint:
            # The server decodes over the ids its model was saved with: items arriving since are
            # recalled there once it serves the next day's model.
            if getattr(self, "client_", None) is None:
                self.client_ = RecallClient(self.config.endpoint)
            histories = [row[row >= 0][::-1] for row in users.recent]                   # chronological
            return self.client_.recall(users.user_ids, histories, k)
        self._add_new_items(users.items.catalog)
        return self.generate(users.recent, k)

    def generate(self, recent: np.ndarray, k: int) -> Candidates:
        """Top items by beam search from histories recent [B, H] (newest first, -1 padded):
        items [B, k] (-1 past the beam width) and log-probability scores [B, k]."""
        cfg = self.config
        histories = [row[row >= 0][::-1] for row in recent]                         # chronological
        if self.tables_ is not None:
            x = item_rows(histories, self.ids_.codes, self.model_.config.max_items)
            search = lambda xb: item_beam_search(self.model_, xb, self.tables_, cfg.beam_width)  # noqa: E731
        else:
            tokens = item_tokens(self.ids_.codes, self.ids_.codebook_size)
            x = history_tokens(histories, tokens, self.model_.config.max_items, left_pad=True)
            search = lambda xb: beam_search(self.model_, xb, self.trie_, cfg.beam_width)  # noqa: E731
        items = np.full((len(recent), k), -1, np.int64)
        scores = np.zeros((len(recent), k), np.float32)
        width = min(k, cfg.beam_width)
        for lo in range(0, len(recent), cfg.serve_batch):
            xb = torch.from_numpy(x[lo: lo + cfg.serve_batch]).to(cfg.device)
            found, logp = search(xb)                                                 # [b, W]
            found, logp = found[:, :width].cpu().numpy(), logp[:, :width].cpu().numpy()
            items[lo: lo + len(found), :width] = found
            scores[lo: lo + len(found), :width] = np.where(found >= 0, logp, 0.0)
        return Candidates(items=items, scores=scores)

    def save(self, path: Path) -> None:
        q = self.ids_.quantizer
        arrays = {"codes": self.ids_.codes, "unique_size": np.array(self.ids_.unique_size),
                  "in_dim": np.array(q.in_dim), "gpt_levels": np.array(self.model_.config.n_levels),
                  "gpt_codebook": np.array(self.model_.config.codebook_size),
                  "gpt_items": np.array(self.model_.config.n_items)}
        arrays |= {f"codebook.{i}": cb for i, cb in enumerate(q.codebooks)}
        arrays |= {f"encoder.{k}": v for k, v in q.encoder.items()}
        arrays |= {f"decoder.{k}": v for k, v in q.decoder.items()}
        arrays |= {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()
                   if k != "head.weight"}                                            # tied to tok.weight (GPT)
        write_state(path, asdict(self.config), **arrays)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        cfg = from_mapping(GenerativeConfig, config, "generative")
        obj = cls(cfg)
        books = [a[f"codebook.{i}"] for i in range(cfg.ids.levels)]
        part = lambda prefix: {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix)}  # noqa: E731
        quantizer = Quantizer(cfg.ids, books, part("encoder."), part("decoder."), int(a["in_dim"]))
        obj.ids_ = SemanticIds(quantizer, a["codes"], int(a["unique_size"]))
        gcfg = GPTConfig(**{**asdict(cfg.model), "n_levels": int(a["gpt_levels"]),
                            "codebook_size": int(a["gpt_codebook"]), "n_items": int(a.get("gpt_items", 0))})
        obj.model_ = ItemGPT(gcfg) if gcfg.arch == "items" else GPT(gcfg)
        state = {k: torch.from_numpy(v) for k, v in part("model.").items()}
        if gcfg.arch != "items":
            state["head.weight"] = state["tok.weight"]
        obj.model_.load_state_dict(state)
        obj.model_.to(cfg.device).eval()
        obj._set_trie(Trie.build(obj.ids_.codes, obj.ids_.codebook_size).to(torch.device(cfg.device)))
        return obj
