"""The generative channel's side of the recall server (components/serving/genserver.py): one POST
of a micro-batch's histories, answered with the server's batched beam search."""
from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import numpy as np

from components.types import Candidates


class RecallServerError(RuntimeError):
    """The recall server could not be reached or refused the request; one line naming the endpoint."""


class RecallClient:
    """A keep-alive HTTP connection per thread to one endpoint (channels recall side by side)."""

    def __init__(self, endpoint: str, timeout_s: float = 30.0):
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise RecallServerError(f"endpoint {endpoint!r}: expected http://host:port")
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._host, self._port = parts.hostname, parts.port or 80
        self._local = threading.local()

    def _post(self, body: bytes) -> dict:
        for attempt in range(2):   # a kept-alive connection the server closed is reopened once
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
            try:
                conn.request("POST", "/recall", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise RecallServerError(f"recall server {self.endpoint}: {type(exc).__name__}: {exc}") from None
                continue
            try:
                out = json.loads(payload)
            except json.JSONDecodeError:
                raise RecallServerError(f"recall server {self.endpoint}: answered {resp.status} with no JSON") from None
            if resp.status != 200:
                raise RecallServerError(f"recall server {self.endpoint}: {resp.status} {out.get('error', '')}")
            return out
        raise AssertionError("unreachable")

    def recall(self, users: np.ndarray, histories: list[np.ndarray], k: int) -> Candidates:
        """Chronological item histories (one per user) -> items [B, k] (-1 padded), scores [B, k]."""
        items = np.full((len(histories), k), -1, np.int64)
        scores = np.zeros((len(histories), k), np.float32)
        if len(histories):
            body = json.dumps({"users": [int(u) for u in users],
                               "histories": [np.asarray(h).tolist() for h in histories], "k": k}).encode()
            out = self._post(body)
            got, got_scores = np.asarray(out["items"], np.int64), np.asarray(out["scores"], np.float32)
            items[:, : got.shape[1]] = got
            scores[:, : got.shape[1]] = got_scores
        return Candidates(items=items, scores=scores)
