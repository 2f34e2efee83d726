"""The generative recall server on the CPU with the tiny model: concurrent HTTP requests answered from
batched decodes, max_batch and max_wait honoured, bad requests answered with one line, prefix reuse
and FP8 rounding, and the channel's endpoint mode returning what it decodes in-process."""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.typedconf import ConfigError, from_mapping
from components.recall.generative import GenerativeConfig, GenerativeRecaller
from components.recall.generative.fast_beam import FastBeamSearch
from components.recall.generative.fp8 import linear, quantize
from components.recall.generative.kv_cache import KVSlab
from components.recall.generative.qwen import QwenConfig, QwenLM
from components.serving.genbackends import ChannelBackend, QwenBackend, random_catalogue_trie
from components.serving.genbuild import add_arguments, build_backend
from components.serving.genserver import GenServer

CFG = QwenConfig()
LO, HI = CFG.sid_offset, CFG.sid_offset + CFG.n_levels * CFG.codebook_size


def separated_model(cfg: QwenConfig = CFG) -> QwenLM:
    """A seeded random model whose matrices are scaled up from the init, so that scores separate clearly."""
    torch.manual_seed(0)
    model = QwenLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(25)
    return model


def _search(weights: str = "native") -> FastBeamSearch:
    return FastBeamSearch(separated_model(), random_catalogue_trie(CFG, 3000, 0), 5, "cpu", torch.float32,
                          weights=weights)


@pytest.fixture(scope="module")
def search():
    return _search()


def _post(url: str, payload, path: str = "/recall") -> tuple[int, dict]:
    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _get(url: str, path: str) -> dict:
    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def _histories(n: int, length: int = 12, seed: int = 0) -> list[list[int]]:
    return np.random.default_rng(seed).integers(LO, HI, (n, length)).tolist()


def test_concurrent_requests_are_answered_from_one_batch(search):
    url, stop = GenServer(QwenBackend(search, 16, graphs=False), max_batch=16, max_wait_ms=400).start_in_thread()
    try:
        hists, got = _histories(6), [None] * 6
        barrier = threading.Barrier(6)

        def client(i):
            barrier.wait()
            got[i] = _post(url, {"users": [i], "histories": [hists[i]], "k": 3})
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alone = [search(torch.tensor([h]))[0][0, :3].tolist() for h in hists]
        assert [g[0] for g in got] == [200] * 6
        assert [g[1]["items"][0] for g in got] == alone          # each row its own answer, top 3
        assert [len(g[1]["scores"][0]) for g in got] == [3] * 6
        batches = _get(url, "/stats")["batches"]
        assert [b[0] for b in batches] == [6]                    # six concurrent requests, one decode
        assert _get(url, "/health")["backend"] == "qwen-native"
    finally:
        stop()


def test_max_wait_and_max_batch_are_honoured(search):
    url, stop = GenServer(QwenBackend(search, 4, graphs=False), max_batch=4, max_wait_ms=150).start_in_thread()
    try:
        t0 = time.monotonic()
        status, out = _post(url, {"histories": _histories(1)})
        took = (time.monotonic() - t0) * 1e3
        (rows, waited, decode_ms, device_ms), = _get(url, "/stats")["batches"]
        assert status == 200 and rows == 1 and len(out["items"][0]) == 5 and device_ms is None   # CPU: untimed
        assert 140 <= waited < 400 and took >= 140               # alone, it waited for company max_wait
        _post(url, b"", "/stats/reset")
        status, out = _post(url, {"histories": _histories(10, seed=1)})
        assert status == 200 and len(out["items"]) == 10
        assert [b[0] for b in _get(url, "/stats")["batches"]] == [4, 4, 2]   # never more than max_batch
        (_, wait1, decode1, _), (_, wait2, _, _), _ = _get(url, "/stats")["batches"]
        # A full batch does not wait for max_wait: the first goes at once, the second as soon as the
        # one model thread is free (its wait is the first's decode, however slow a loaded machine is).
        assert wait1 < 140 and wait2 - (wait1 + decode1) < 100
    finally:
        stop()


def test_pipelined_requests_and_a_request_split_over_batches_get_their_own_answers(search):
    """One connection sends three requests back to back (bytes split mid-header, as TCP may); the
    second has more rows than a batch holds, so it is answered once its last batch is decoded."""
    import socket
    backend = QwenBackend(search, 4, graphs=False)
    url, stop = GenServer(backend, max_batch=4, max_wait_ms=5).start_in_thread()
    hists = [_histories(1, seed=10)[0], *_histories(6, seed=11), _histories(1, seed=12)[0]]
    bodies = [json.dumps({"histories": [hists[0]], "k": 2}).encode(),
              json.dumps({"users": list(range(6)), "histories": hists[1:7]}).encode(),
              json.dumps({"histories": [hists[7]]}).encode()]
    wire = b"".join(b"POST /recall HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies)
    host, port = url[len("http://"):].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(wire[:30])
            time.sleep(0.05)
            sock.sendall(wire[30:])
            got, answers = b"", []
            while len(answers) < 3:
                got += sock.recv(1 << 16)
                while b"\r\n\r\n" in got:
                    head, rest = got.split(b"\r\n\r\n", 1)
                    n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) < n:
                        break
                    answers.append((int(head.split()[1]), json.loads(rest[:n])))
                    got = rest[n:]
        alone = backend.decode(range(8), [np.array(h) for h in hists])[0]
        assert [a[0] for a in answers] == [200, 200, 200]
        assert answers[0][1]["items"] == alone[:1, :2].tolist()            # in order, each its own k
        assert answers[1][1]["items"] == alone[1:7].tolist()               # 6 rows over two batches
        assert answers[2][1]["items"] == alone[7:].tolist()
        assert sum(b[0] for b in _get(url, "/stats")["batches"]) == 8
        assert all(b[0] <= 4 for b in _get(url, "/stats")["batches"])
        status, out = _post(url, b"GET nothing\r\n\r\n", "/recall")    # a body that is not JSON
        assert status == 400 and "not JSON" in out["error"]
        with socket.create_connection((host, int(port)), timeout=30) as sock:   # no request line: 400, closed
            sock.sendall(b"NONSENSE\r\n\r\n")
            reply = b""
            while chunk := sock.recv(1 << 16):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400") and b"Connection: close" in reply
    finally:
        stop()


def test_bad_requests_get_one_line_answers(search):
    url, stop = GenServer(QwenBackend(search, 8, graphs=False), max_batch=8, max_wait_ms=1).start_in_thread()
    try:
        for payload, says in ((b"{nope", "not JSON"), ({"histories": [[LO]], "colour": 1}, "unknown keys"),
                              ({"histories": [[]]}, "at least 1"), ({"histories": [["a"]]}, "integers"),
                              ({"histories": [[LO]], "k": 0}, "positive"),
                              ({"users": [1, 2], "histories": [[LO]]}, "one user per history")):
            status, out = _post(url, payload)
            assert status == 400 and says in out["error"] and "\n" not in out["error"]
        status, out = _post(url, {"histories": [[HI + 99]]})      # a token outside the vocabulary
        assert status == 500 and out["error"].startswith("decode failed")
        assert _post(url, {"histories": [[LO]]})[0] == 200         # and the server still serves
        for bad_row in (1, 9):   # a request over two batches failing in its first or its second: one 500
            hists = _histories(12, seed=bad_row)
            hists[bad_row] = [HI + 99]
            status, out = _post(url, {"users": list(range(12)), "histories": hists})
            assert status == 500 and out["error"].startswith("decode failed")
            status, out = _post(url, {"histories": _histories(3)})
            assert status == 200 and len(out["items"]) == 3
        assert "no route" in _get(url, "/nowhere")["error"]
    finally:
        stop()


def test_prefix_reuse_gives_the_full_prefill_answers(search):
    backend = QwenBackend(search, 8, graphs=False, slab=KVSlab(search, 8, 32))
    hists = np.array(_histories(5, 20, seed=2))
    yesterday = backend.decode(range(5), list(hists[:, :14]))
    assert yesterday[0].shape == (5, 5) and list(backend.slab.length[:5]) == [14] * 5
    items, scores = backend.decode(range(5), list(hists))      # 14 tokens cached, 6 new
    assert list(backend.slab.reusable(backend.slab.slots_for(list(range(5))), list(hists))) == [19] * 5
    full_items, full_scores = search(torch.from_numpy(hists))
    assert np.array_equal(items, full_items.numpy())
    np.testing.assert_allclose(scores, full_scores.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="whole batch"):
        QwenBackend(search, 16, graphs=False, slab=KVSlab(search, 8, 32))


def test_slab_gathers_and_stores_the_keys_the_search_computed(search):
    """One index_select out of the slot-major slab (into a buffer, as a CUDA graph's static one) and
    one index_copy_ into it hold exactly the per-layer keys a full prefill computes; the vectorised
    common prefix is the per-row one."""
    slab = KVSlab(search, 6, 24)
    hists = np.array(_histories(4, 20, seed=4))
    kv = search.search(torch.from_numpy(hists))[2]                        # per layer (k, v) [4, hkv, 20, D]
    slots = slab.slots_for([7, 8, 9, 10])
    slab.store(slots[:2], list(hists[:2]), 0, [(k[:2], v[:2]) for k, v in kv])   # the per-layer form
    slab.store(slots[2:], list(hists[2:, :12]), 0, KVSlab.stacked([(k[2:, :, :12], v[2:, :, :12]) for k, v in kv], 0))
    slab.store(slots[2:], list(hists[2:]), 12, KVSlab.stacked([(k[2:], v[2:]) for k, v in kv], 12))   # the rest
    order = np.array([3, 0, 2, 1])
    buf = torch.full((6, 2, CFG.n_layer, CFG.n_kv_head, 15, CFG.head_dim), float("nan"))
    slab.gather(slots[order], 15, out=buf[:4])
    for i, (k, v) in enumerate(kv):
        assert torch.equal(buf[:4, 0, i], k[order, :, :15]) and torch.equal(buf[:4, 1, i], v[order, :, :15])
        pk, pv = slab.past(slots[order], 15)[i]
        assert torch.equal(pk, k[order, :, :15]) and torch.equal(pv, v[order, :, :15])
    assert torch.isnan(buf[4:]).all()                                     # rows past the batch untouched
    rng = np.random.default_rng(5)
    asked = [hists[0][:9], hists[1], np.concatenate([hists[2][:5], [LO]]), hists[3][:1],
             np.concatenate([hists[0], hists[0]])]                       # shorter, repeated, diverging, one, longer
    asked[1] = asked[1].copy()
    asked[1][rng.integers(20)] = HI + 1
    got = slab.common_prefix(slab.slots_for([7, 8, 9, 10, 7]), asked)
    per_row = []
    for s, h in zip(slab.slots_for([7, 8, 9, 10, 7]), asked):           # the former per-row loop
        n = min(int(slab.length[s]), len(h) - 1)
        differ = np.nonzero(slab.tokens[s, :n] != h[:n])[0]
        per_row.append(n if len(differ) == 0 else differ[0])
    assert got.tolist() == per_row and got[0] == 8 and got[3] == 0 and got[4] == 20


def test_a_longer_common_prefix_is_rounded_down_to_a_warmed_length(search):
    """The first new token equal to the cached one makes the common prefix 141, a shape no graph was
    captured for: it is reused as 140 (the warmed length) and answers as a full prefill does; a prefix
    shorter than every warmed length is prefilled in full."""
    assert KVSlab(search, 4, 160).reuse_lengths is None
    backend = QwenBackend(search, 4, graphs=False, slab=KVSlab(search, 4, 160, reuse_lengths=[140]))
    rng = np.random.default_rng(6)
    earlier = rng.integers(LO, HI, (3, 150))
    backend.decode([0, 1, 2], list(earlier))                             # today's first requests, cached
    today = rng.integers(LO, HI, (3, 150))
    today[0, :141] = earlier[0, :141]                                    # 141 tokens in common
    today[1, :140] = earlier[1, :140]                                    # 140: reused as is
    today[2, :139] = earlier[2, :139]                                    # 139: below 140, prefilled in full
    slots = backend.slab.slots_for([0, 1, 2])
    assert backend.slab.common_prefix(slots, list(today)).tolist() == [141, 140, 139]
    assert backend.slab.reusable(slots, list(today)).tolist() == [140, 140, 0]
    items, scores = backend.decode([0, 1, 2], list(today))
    full_items, full_scores = search(torch.from_numpy(today))
    assert np.array_equal(items, full_items.numpy())
    np.testing.assert_allclose(scores, full_scores.numpy(), rtol=1e-4, atol=1e-4)
    assert backend.slab.length[slots].tolist() == [150] * 3              # and today's keys are cached
    with pytest.raises(ConfigError, match="reuse_lengths"):
        KVSlab(search, 4, 160, reuse_lengths=[160])
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-batch", type=int, default=4)
    add_arguments(ap)
    tiny = ["--preset", "tiny", "--device", "cpu", "--items", "300", "--prefix-slots", "8"]
    for extra, lengths in ((["--warm-shapes", "140:0,150:140,150:0"], [140]), ([], None),
                           (["--warm-shapes", "150:140", "--reuse-lengths", "100,140"], [100, 140])):
        slab = build_backend(ap.parse_args(tiny + extra)).slab                # the server's command line
        assert (slab.reuse_lengths if lengths is None else slab.reuse_lengths.tolist()) == lengths


def test_fp8_rounding_stays_close_and_keeps_the_top_items(search):
    w, x = torch.randn(48, 32), torch.randn(7, 32)
    rel = (linear(x, quantize(w)) - x @ w.T).norm() / (x @ w.T).norm()
    assert 0 < rel < 0.08                                      # e4m3: 3 mantissa bits, per-row scales
    hist = torch.tensor(_histories(16, seed=3))
    native, fp8 = search(hist)[0], _search("fp8")(hist)[0]
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(native, fp8)])
    assert overlap >= 0.4   # random weights: near-ties everywhere; a chance overlap of 5 of 3000 items is ~0
    with pytest.raises(ConfigError, match="allowed native, fp8"):
        FastBeamSearch(QwenLM(CFG), random_catalogue_trie(CFG, 10, 0), 5, "cpu", torch.float32, "none", "int4")


TINY = {"ids": {"method": "rqkmeans", "levels": 2, "codebook_size": 4},
        "model": {"max_items": 4, "n_layer": 1, "n_head": 2, "d_model": 16},
        "train": {"epochs": 2, "batch_size": 8}, "beam_width": 5}


def test_channel_with_an_endpoint_returns_its_in_process_answers(co_click_data, make_users, tmp_path):
    model = GenerativeRecaller(from_mapping(GenerativeConfig, TINY)).fit(co_click_data)
    model.save(tmp_path / "g")
    served = GenerativeRecaller.load(tmp_path / "g")
    url, stop = GenServer(ChannelBackend(served), max_batch=2, max_wait_ms=1).start_in_thread()
    try:
        users = make_users([0, 1, 2, 99], recent=[[2, 1], [3], [5, 4, 1], []])
        here = GenerativeRecaller.load(tmp_path / "g")
        remote = GenerativeRecaller.load(tmp_path / "g")
        remote.config = replace(remote.config, endpoint=url)
        for k in (3, 8):
            a, b = here.recall(users, k), remote.recall(users, k)
            assert np.array_equal(a.items, b.items)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
        assert [b[0] for b in _get(url, "/stats")["batches"]] == [2, 2, 2, 2]   # decoded by the server
    finally:
        stop()
    conf = from_mapping(GenerativeConfig, {**TINY, "endpoint": "http://127.0.0.1:9"}, "generative")
    gone = GenerativeRecaller.load(tmp_path / "g")
    gone.config = conf
    with pytest.raises(RuntimeError, match="recall server http://127.0.0.1:9"):
        gone.recall(users, 3)
    with pytest.raises(ConfigError, match="generative.endpoint"):
        from_mapping(GenerativeConfig, {"endpoint": "ftp://x"}, "generative")
    with pytest.raises(ConfigError, match="endpont"):
        from_mapping(GenerativeConfig, {"endpont": "http://x:1"}, "generative")


def test_the_server_command_starts_and_refuses_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "nothing.pt"
    bad.write_text("not a checkpoint")
    out = subprocess.run([sys.executable, "-m", "components.serving.genserver", "--checkpoint", str(bad),
                          "--device", "cpu", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and out.stderr.strip().startswith("genserver: checkpoint")
    assert len(out.stderr.strip().splitlines()) == 1


def test_switch_interval_must_be_positive():
    from components.serving.genserver import main
    before = sys.getswitchinterval()
    with pytest.raises(SystemExit, match="switch-interval-ms must be positive"):
        main(["--preset", "tiny", "--device", "cpu", "--switch-interval-ms", "0"])
    assert sys.getswitchinterval() == before
