"""What the generative recall server decodes with: one `decode(users, histories)` per batch.

- `ChannelBackend`: a saved generative channel (`GenerativeRecaller`), histories in item ids; what the
  simulator's channel gets back over HTTP is what it would have decoded in-process.
- `QwenBackend`: the Qwen2-shaped decoder's `FastBeamSearch` (bf16 or FP8 weights), histories in
  tokens; on CUDA every batch is padded up to a bucket whose search was captured as one CUDA graph,
  and with a `KVSlab` each user's earlier history is not prefilled again.
- `HFBackend`: `transformers`' Qwen2ForCausalLM.generate on the same weights, each step held to the
  codes the catalogue's trie allows after the beam's prefix: the baseline behind the same server.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from common.typedconf import ConfigError
from components.recall.generative.beam import Trie
from components.recall.generative.fast_beam import CudaGraphSearch, FastBeamSearch
from components.recall.generative.kv_cache import KVSlab
from components.recall.generative.qwen import QwenConfig


class Backend(Protocol):
    name: str
    beam: int
    min_history: int   # shortest history a request may send

    def decode(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """-> items [n, beam] (-1 where fewer valid ids) and scores [n, beam], row i for request row i."""
        ...

    def warm(self) -> None:
        """Everything done once before the first request (graph capture); may be nothing."""
        ...


def random_catalogue_trie(cfg: QwenConfig, n_items: int, seed: int) -> Trie:
    """A catalogue of n_items random semantic ids (duplicates dropped), as the benchmarks use."""
    codes = np.random.default_rng(seed).integers(0, cfg.codebook_size, (n_items, cfg.n_levels))
    return Trie.build(np.unique(codes, axis=0), cfg.codebook_size)


def _by_length(histories: Sequence[np.ndarray]) -> dict:
    """Row indices grouped by history length: rows of a group stack unpadded."""
    groups: dict = {}
    for row, h in enumerate(histories):
        groups.setdefault(len(h), []).append(row)
    return groups


class ChannelBackend:
    name = "channel"
    min_history = 0     # an empty history still gets the model's unconditional ids

    def __init__(self, recaller):
        self.recaller = recaller
        self.beam = recaller.config.beam_width

    def warm(self) -> None:
        return None

    def decode(self, users, histories):
        width = max([len(h) for h in histories] + [1])
        recent = np.full((len(histories), width), -1, np.int64)                     # newest first, -1 padded
        for i, h in enumerate(histories):
            recent[i, : len(h)] = np.asarray(h, np.int64)[::-1]
        cands = self.recaller.generate(recent, self.beam)
        return cands.items, cands.scores


class _WithKV:
    """A search that also returns the keys of the history's new tokens, stacked as the slab stores
    them ([B, 2, L, hkv, T, D]): inside a graph, so storing them is one host call, not two per layer."""

    def __init__(self, search: FastBeamSearch):
        self.cfg, self.device, self.dtype, self.search = search.cfg, search.device, search.dtype, search

    def __call__(self, idx, key_valid=None, past=None):
        items, scores, kv = self.search.search(idx, key_valid, past)
        return items, scores, KVSlab.stacked(kv, 0 if past is None else past[0][0].shape[2])


class QwenBackend:
    """buckets: the batch sizes captured as graphs (CUDA only); shapes: (history tokens, cached tokens)
    pairs captured up front by `warm` (others are captured on first sight; the slab's reuse_lengths
    keep the cached lengths to the warmed ones)."""

    min_history = 1

    def __init__(self, search: FastBeamSearch, max_batch: int, graphs: bool, buckets: Sequence[int] = (),
                 slab: KVSlab | None = None, shapes: Sequence[tuple[int, int]] = ()):
        if graphs and search.device.type != "cuda":
            raise ConfigError("QwenBackend graphs=True needs a CUDA device")
        self.search, self.beam, self.slab = search, search.beam, slab
        self.name = f"qwen-{search.weights}" + ("-prefix" if slab is not None else "")
        self.max_batch, self.graphs = max_batch, graphs
        self.buckets = sorted({b for b in buckets if b < max_batch} | {max_batch})
        if slab is not None and len(slab.length) < max_batch:
            raise ConfigError(f"QwenBackend: the KV slab's {len(slab.length)} slots must hold a whole batch ({max_batch})")
        self.shapes = list(shapes)
        self._graphs: dict[tuple[int, int, int], CudaGraphSearch] = {}
        # One pool for every captured graph: decode replays one at a time on the model thread and copies
        # (or stores) each replay's outputs before the next, so they may share their intermediates'
        # memory; with a pool each, dozens of buckets x shapes of the 1.5B model outgrew the card.
        self._pool = torch.cuda.graph_pool_handle() if graphs else None
        self.fn = _WithKV(search) if slab is not None else search
        # The last batch's device time (ms, CUDA events around its copies, replays and stores), so the
        # server's stats can tell the GPU's share of a decode from the host's; None off CUDA.
        self.device_ms: float | None = None

    def warm(self) -> None:
        for length, cached in self.shapes:
            for b in self.buckets if self.graphs else []:
                self._graph(b, length - cached, cached)

    def _graph(self, bucket: int, length: int, cached: int) -> CudaGraphSearch:
        key = (bucket, length, cached)
        if key not in self._graphs:
            self._graphs[key] = CudaGraphSearch(self.fn, bucket, length, cached, pool=self._pool)
        return self._graphs[key]

    def _run(self, new: torch.Tensor, slots: np.ndarray | None, t0: int):
        """new [n, T] tokens after the t0 cached ones of these slots -> items, scores [n, beam] and the
        new tokens' keys [n, 2, L, hkv, T, D] (None without a slab)."""
        if not self.graphs:
            out = self.fn(new, None, self.slab.past(slots, t0) if t0 else None)
        else:
            n = new.shape[0]
            graph = self._graph(self.buckets[bisect.bisect_left(self.buckets, n)], new.shape[1], t0)
            if t0:   # the cached prefixes copied once, straight into the graph's static buffer
                self.slab.gather(slots, t0, out=graph.past_kv[:n])
            out = graph(new)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    @torch.no_grad()
    def decode(self, users, histories):
        dev, n = self.search.device, len(histories)
        histories = [np.asarray(h, np.int64) for h in histories]
        lengths = np.fromiter((len(h) for h in histories), np.int64, n)
        reused = np.zeros(n, np.int64)
        slots = None
        if self.slab is not None:
            slots = self.slab.slots_for(list(users))
            reused = self.slab.reusable(slots, histories)
        items = np.full((n, self.beam), -1, np.int64)
        scores = np.zeros((n, self.beam), np.float32)
        keys, group = np.unique(np.stack([reused, lengths], 1), axis=0, return_inverse=True)   # rows stack unpadded
        done, events = [], []
        for g, (t0, _) in enumerate(keys.tolist()):
            rows = np.flatnonzero(group.reshape(-1) == g)
            for lo in range(0, len(rows), self.max_batch):
                part = rows[lo: lo + self.max_batch]
                hist = [histories[r] for r in part]
                new = torch.from_numpy(np.stack([h[t0:] for h in hist])).to(dev)     # [b, T - t0]
                if dev.type == "cuda":
                    events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                    events[-1][0].record()
                got, got_scores, kv = self._run(new, None if slots is None else slots[part], t0)
                if self.slab is not None:
                    self.slab.store(slots[part], hist, t0, kv)
                # Copied to the host once every group is queued (one wait for the device, not one per
                # group); cloned because a later part of the same shape replays the same graph.
                done.append((part, got.clone(), got_scores.to(torch.float32, copy=True)))
                if events:
                    events[-1][1].record()
        for part, got, got_scores in done:
            items[part] = got.cpu().numpy()
            scores[part] = got_scores.cpu().numpy()
        self.device_ms = sum(a.elapsed_time(b) for a, b in events) if events else None
        return items, np.where(items >= 0, scores, 0.0).astype(np.float32)


def qwen2_from_config(cfg: QwenConfig, device: torch.device, dtype: torch.dtype):
    """transformers' Qwen2ForCausalLM in the shape of cfg (random weights, replaced by the caller)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    hcfg = Qwen2Config(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_kv_head, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_eps,
                       max_position_embeddings=4096, tie_word_embeddings=cfg.tie_embeddings,
                       bos_token_id=0, eos_token_id=1, pad_token_id=0)
    with torch.device(device):
        torch.manual_seed(0)
        return Qwen2ForCausalLM._from_config(hcfg, attn_implementation="sdpa", dtype=dtype).eval()


class HFBackend:
    """generate with beam search; prefix_allowed_tokens_fn walks the trie for every beam at every step
    (on the host, as that API asks), so every returned id is a catalogue item."""

    name = "transformers-generate"
    min_history = 1

    def __init__(self, hf_model, cfg: QwenConfig, trie: Trie, beam: int, max_batch: int):
        self.hf, self.cfg, self.beam, self.max_batch = hf_model, cfg, beam, max_batch
        self.children = [c.cpu().numpy() for c in trie.children]
        self.device = next(hf_model.parameters()).device

    def warm(self) -> None:
        return None

    def _walk(self, codes: Sequence[int]) -> int:
        """The trie node after these codes (an item id after the last level); -1 off the trie."""
        node = 0
        for level, c in enumerate(codes):
            if node < 0 or not 0 <= c < self.children[level].shape[1]:
                return -1
            node = int(self.children[level][node, c])
        return node

    @torch.no_grad()
    def decode(self, users, histories):
        cfg, n = self.cfg, len(histories)
        items = np.full((n, self.beam), -1, np.int64)
        scores = np.zeros((n, self.beam), np.float32)
        for t, rows in _by_length(histories).items():
            def allowed(_batch_id, ids, t=t):
                level = ids.shape[-1] - t
                if level >= cfg.n_levels:
                    return [1]                                                       # eos after a whole id
                node = self._walk([int(x) - cfg.level_tokens(lv)[0] for lv, x in enumerate(ids[t:].tolist())])
                codes = np.nonzero(self.children[level][node] >= 0)[0] if node >= 0 else []
                return [cfg.level_tokens(level)[0] + int(c) for c in codes] or [1]
            for lo in range(0, len(rows), self.max_batch):
                part = rows[lo: lo + self.max_batch]
                idx = torch.from_numpy(np.stack([histories[r] for r in part])).to(self.device)
                out = self.hf.generate(input_ids=idx, attention_mask=torch.ones_like(idx), num_beams=self.beam,
                                       num_return_sequences=self.beam, max_new_tokens=cfg.n_levels,
                                       min_new_tokens=cfg.n_levels, do_sample=False, prefix_allowed_tokens_fn=allowed,
                                       output_scores=True, return_dict_in_generate=True, length_penalty=0.0)
                seqs = out.sequences[:, t: t + cfg.n_levels].cpu().numpy().reshape(len(part), self.beam, -1)
                seq_scores = out.sequences_scores.float().cpu().numpy().reshape(len(part), self.beam)
                for j, r in enumerate(part):
                    for w in range(self.beam):
                        codes = [int(x) - cfg.level_tokens(lv)[0] for lv, x in enumerate(seqs[j, w])]
                        items[r, w] = self._walk(codes) if len(codes) == cfg.n_levels else -1
                    scores[r] = np.where(items[r] >= 0, seq_scores[j], 0.0)
        return items, scores
