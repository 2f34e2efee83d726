"""The online feature store as a deployment runs it: the day's offline tables synced to a Redis
server, read through a local in-process cache tier (LRU of user rows, TTL), and the stream of item
counts the serving shards share. `kind: embedded` (the default) keeps everything in the serving
process (FeatureStore), with no server.

A user row is stored as the little-endian int64 bytes of its daily columns (USER_SCALARS, in
order) followed by its recent items (at most RECENT_CLICKS): one HMGET field per user, one round
trip per batch of cache misses. Item columns are one dense [I] int64 blob each.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from common.typedconf import ConfigError, require
from components.features.columns import BY_NAME, RECENT_CLICKS, columns_of, width
from components.features.store import (USER_SCALARS, FeatureStore, assemble, item_columns, item_features,
                                       load_catalog)
from components.features.stream import Bus, FileBus, MemoryBus, wait_for
from components.lake import Lake
from components.types import ItemFeatures, UserBatch

# What a stored user row holds, set as the day's ready mark: rows of another layout are refused.
LAYOUT = f"{','.join(USER_SCALARS)};recent<={RECENT_CLICKS}"
SYNC_CHUNK = 10_000       # user rows per pipelined HSET
STREAM_EXPIRY_S = 86_400  # a day's shared stream parts outlive its serving, not the server


@dataclass(frozen=True)
class OnlineStoreConfig:
    kind: Literal["embedded", "redis"] = "embedded"
    url: str = "redis://localhost:6379/0"
    cache_size: int = 100_000     # user rows the local tier keeps (least recently used out); 0: none
    cache_ttl_s: float = 300.0    # a cached row older than this is read from the server again
    shard_wait_s: float = 600.0   # how long a shard waits for the others' events of a micro-batch

    def validate(self, where: str) -> None:
        require(self.cache_size >= 0, f"{where}.cache_size", f"must be at least 0, got {self.cache_size}")
        require(self.cache_ttl_s > 0, f"{where}.cache_ttl_s", f"must be > 0, got {self.cache_ttl_s:g}")
        require(self.shard_wait_s > 0, f"{where}.shard_wait_s", f"must be > 0, got {self.shard_wait_s:g}")
        require(self.url.startswith(("redis://", "rediss://", "unix://")),
                f"{where}.url", f"must be a redis://, rediss:// or unix:// address, got {self.url!r}")


class OnlineStoreError(ConfigError):
    """The online store's server cannot serve: unreachable, or the day not synced. One line."""


def connect(cfg: OnlineStoreConfig):
    import redis

    try:
        client = redis.Redis.from_url(cfg.url, socket_connect_timeout=2, socket_timeout=30)
        client.ping()
    except (redis.exceptions.RedisError, ValueError, OSError) as exc:
        raise OnlineStoreError(f"online_store.url: cannot reach the Redis server at {cfg.url} ({exc})") from None
    return client


@dataclass(frozen=True)
class Keys:
    """One campaign's keys on a server other campaigns may share: named by its lake's path."""

    prefix: str
    day: int

    @classmethod
    def of(cls, lake: Lake, day: int) -> "Keys":
        return cls(f"reclab:{hashlib.sha1(str(lake.root.resolve()).encode()).hexdigest()[:12]}", day)

    def users(self, day: int | None = None) -> str:
        return f"{self.prefix}:features_user:{self.day if day is None else day}"

    def items(self, day: int | None = None) -> str:
        return f"{self.prefix}:features_item:{self.day if day is None else day}"

    def ready(self, day: int | None = None) -> str:
        return f"{self.prefix}:ready:{self.day if day is None else day}"

    def stream(self, micro_batch: int, shard: int, n_shards: int) -> str:
        return f"{self.prefix}:rt:{self.day}:{micro_batch}:{shard}of{n_shards}"


def encode_rows(columns: Mapping[str, np.ndarray], offsets: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Rows [n] of the daily user columns and recent lists (offsets [n + 1] into values) -> bytes each."""
    mat = np.column_stack([np.asarray(columns[n], "<i8") for n in USER_SCALARS])          # [n, k]
    vals = np.asarray(values, "<i8")
    return [mat[i].tobytes() + vals[offsets[i]:min(offsets[i + 1], offsets[i] + RECENT_CLICKS)].tobytes()
            for i in range(len(mat))]


def sync(lake: Lake, day: int, cfg: OnlineStoreConfig) -> int:
    """Copy the day's features_user and features_item to the server (nothing when embedded);
    the day is served only once its ready mark is set, after every row. Returns the user rows."""
    if cfg.kind != "redis":
        return 0
    client, keys = connect(cfg), Keys.of(lake, day)
    client.delete(keys.ready(), keys.users(), keys.items())
    rows = 0
    for batch in lake.read_batches("features_user", [day], columns=["user_id", *USER_SCALARS, "u_recent"]):
        rec = batch.column("u_recent").combine_chunks()
        off = rec.offsets.to_numpy().astype(np.int64)
        vals = rec.values.to_numpy(zero_copy_only=False)
        encoded = encode_rows({n: batch.column(n).to_numpy() for n in USER_SCALARS}, off - off[0], vals[off[0]:])
        ids = batch.column("user_id").to_numpy().astype(str)
        pipe = client.pipeline(transaction=False)
        for lo in range(0, len(ids), SYNC_CHUNK):
            pipe.hset(keys.users(), mapping=dict(zip(ids[lo:lo + SYNC_CHUNK], encoded[lo:lo + SYNC_CHUNK])))
        pipe.execute()
        rows += len(ids)
    n_items = load_catalog(lake, day).n_items
    client.hset(keys.items(), mapping={k: v.astype("<i8").tobytes() for k, v in item_columns(lake, day, n_items).items()})
    client.set(keys.ready(), LAYOUT)
    # The server keeps the day served and the one before (a server still on yesterday), no older.
    if day >= 2:
        client.delete(keys.ready(day - 2), keys.users(day - 2), keys.items(day - 2))
    return rows


class ServerStore:
    """FeatureStore's lookups from the server, through the local cache tier; the same UserBatch.

    hits/misses count user lookups answered by the cache and by the server (hits + misses: every
    user asked); round_trips the reads of a batch's misses, each timed into server_ms (wall clock)."""

    def __init__(self, client, keys: Keys, day: int, items: ItemFeatures, cfg: OnlineStoreConfig):
        self.client, self.keys, self.day, self.items, self.cfg = client, keys, day, items, cfg
        self.cache_: OrderedDict[int, tuple[float, np.ndarray]] = OrderedDict()
        self.hits = self.misses = self.round_trips = 0
        self.server_ms: list[float] = []
        self.unknown = np.zeros(len(USER_SCALARS), "<i8")     # a user the server has no row of: new

    @classmethod
    def open(cls, lake: Lake, day: int, cfg: OnlineStoreConfig) -> "ServerStore":
        client, keys = connect(cfg), Keys.of(lake, day)
        ready = client.get(keys.ready())
        if ready is None:
            raise OnlineStoreError(f"online_store: day {day}'s features are not on the server at {cfg.url}; "
                                   f"build and sync them first (online.publish_features)")
        if ready.decode() != LAYOUT:
            raise OnlineStoreError(f"online_store: day {day}'s rows on {cfg.url} have another layout "
                                   f"({ready.decode()!r}, this code reads {LAYOUT!r}); sync the day again")
        catalog = load_catalog(lake, day)
        blobs = client.hgetall(keys.items())
        names = [c.name for c in columns_of("features_item")]
        missing = [n for n in names if n.encode() not in blobs]
        if missing:
            raise OnlineStoreError(f"online_store: the server's items of day {day} lack {missing}; sync the day again")
        # A fixed-width list column travels flat, row after row: [I * width] -> [I, width].
        cols = {n: np.frombuffer(blobs[n.encode()], "<i8").astype(np.int64).reshape(
            (catalog.n_items, width(BY_NAME[n])) if width(BY_NAME[n]) else (-1,)) for n in names}
        return cls(client, keys, day, item_features(catalog, cols), cfg)

    def rows(self, asked: np.ndarray) -> list[np.ndarray]:
        """The stored row of each user [B]: the cache's while fresh, the rest in one HMGET."""
        now = time.monotonic()
        out: list[np.ndarray | None] = [None] * len(asked)
        wanted: dict[int, list[int]] = {}
        for i, u in enumerate(asked.tolist()):
            hit = self.cache_.get(u)
            if hit is not None and hit[0] > now:
                self.cache_.move_to_end(u)
                out[i] = hit[1]
                self.hits += 1
            else:
                wanted.setdefault(u, []).append(i)
                self.misses += 1
        if wanted:
            t0 = time.perf_counter()
            raws = self.client.hmget(self.keys.users(), [str(u) for u in wanted])
            self.server_ms.append((time.perf_counter() - t0) * 1e3)
            self.round_trips += 1
            for u, raw in zip(wanted, raws):
                row = self.unknown if raw is None else np.frombuffer(raw, "<i8")
                for i in wanted[u]:
                    out[i] = row
                if self.cfg.cache_size:
                    self.cache_[u] = (now + self.cfg.cache_ttl_s, row)
                    self.cache_.move_to_end(u)
            while len(self.cache_) > self.cfg.cache_size:
                self.cache_.popitem(last=False)
        return out  # type: ignore[return-value]

    def user_batch(self, user_ids: np.ndarray, request_ids: np.ndarray | None = None,
                   realtime: Mapping[str, np.ndarray] | None = None, items: ItemFeatures | None = None) -> UserBatch:
        """As FeatureStore.user_batch, from the server's rows."""
        asked = np.asarray(user_ids, np.int64)
        rows, k = self.rows(asked), len(USER_SCALARS)
        mat = np.stack([r[:k] for r in rows]).astype(np.int64) if len(rows) else np.zeros((0, k), np.int64)
        recent = np.full((len(rows), RECENT_CLICKS), -1, np.int64)
        for i, r in enumerate(rows):
            recent[i, :len(r) - k] = r[k:]
        cols = {n: mat[:, j].copy() for j, n in enumerate(USER_SCALARS)}
        return assemble(self.day, self.items if items is None else items, asked, cols, recent, request_ids, realtime)

    @property
    def hit_rate(self) -> float:
        return self.hits / max(self.hits + self.misses, 1)


def publish_features(lake: Lake, day: int, cfg: OnlineStoreConfig) -> None:
    """Build the day's feature tables in the lake, then sync them to the server when there is one."""
    from components.features.store import build_features

    build_features(lake, day)
    sync(lake, day, cfg)


def open_store(lake: Lake, day: int, users: np.ndarray | None, cfg: OnlineStoreConfig) -> FeatureStore | ServerStore:
    """The day's online store for serving `users` (a shard's): in-process, or the server's."""
    return FeatureStore.load(lake, day, users) if cfg.kind == "embedded" else ServerStore.open(lake, day, cfg)


class RedisBus:
    """The shards' meeting place on the server: one key per (micro-batch, shard)."""

    def __init__(self, client, keys: Keys, n_shards: int, wait_s: float):
        self.client, self.keys, self.n_shards, self.wait_s = client, keys, n_shards, wait_s

    def put(self, micro_batch: int, shard: int, payload: bytes) -> None:
        self.client.set(self.keys.stream(micro_batch, shard, self.n_shards), payload, ex=STREAM_EXPIRY_S)

    def gather(self, micro_batch: int) -> list[bytes]:
        names = [self.keys.stream(micro_batch, s, self.n_shards) for s in range(self.n_shards)]
        return wait_for(lambda: self.client.mget(names), f"online store micro-batch {micro_batch}", self.wait_s)


def open_bus(lake: Lake, day: int, cfg: OnlineStoreConfig, n_shards: int, folder: Path) -> Bus:
    """Where the day's shards share their item events: the server, else files under `folder`
    (shards on one machine or a shared disk), else, for one shard, this process."""
    if cfg.kind == "redis":
        return RedisBus(connect(cfg), Keys.of(lake, day), n_shards, cfg.shard_wait_s)
    return MemoryBus() if n_shards == 1 else FileBus(folder, n_shards, cfg.shard_wait_s)


def reset_stream(lake: Lake, day: int, cfg: OnlineStoreConfig) -> None:
    """Forget a day's shared stream parts before it is served (again)."""
    if cfg.kind == "redis":
        client = connect(cfg)
        stale = list(client.scan_iter(match=f"{Keys.of(lake, day).prefix}:rt:{day}:*", count=1000))
        if stale:
            client.delete(*stale)
