"""The real service under hostile input: poisoning feedback, hostile policy directories, oversized prompts,
half-sent requests, duplicate feedback races, admin without a token, a second writer — each answered with a 4xx
(or refused at start) and none able to break, blow up or silently change the server."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agents.routers import LinUCB
from routing_env.data import LoggedDataset
from tests.agents.online.serving import AUTH, REPO, Client, Server, in_threads

pytest.importorskip("uvicorn")

MIB = 1 << 20


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on the server's import path with a module that leaves a marker file when imported."""
    path = tmp_path_factory.mktemp("evil")
    (path / "evil_mod.py").write_text(
        f"from pathlib import Path\nPath({str(path / 'imported')!r}).write_text('imported')\nclass X: ...\n"
    )
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, policy_dir: Path, evil: Path) -> Iterator[Server]:
    """A server with a token, hot swaps limited to pytest's temporary tree and to 16 MiB."""
    root = str(tmp_path_factory.getbasetemp())
    srv = Server(tmp_path_factory.mktemp("guarded") / "store.db", policy_dir, "--policy-root", root,
                 "--max-policy-mb", "16")  # fmt: skip
    srv.env["PYTHONPATH"] += os.pathsep + str(evil)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def greedy_dir(data: LoggedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = LinUCB(alpha=0.3, seed=0).fit(data.select(np.arange(500)), cost_weight=0.5)  # epsilon=0
    return policy.save(tmp_path_factory.mktemp("greedy") / "linucb")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, greedy_dir: Path) -> Iterator[Server]:
    """A server without a token, serving a deterministic policy, with a 1 s read timeout."""
    srv = Server(tmp_path_factory.mktemp("open") / "store.db", greedy_dir, "--read-timeout", "1", token=None)
    srv.start()
    yield srv
    srv.stop()


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


# ---------------------------------------------------------------------------------------------------- feedback
def test_poisoning_feedback_is_refused_and_nothing_is_stored(guarded: Server, data: LoggedDataset) -> None:
    x = (data.features[0] * 1000).tolist()
    with httpx.Client(base_url=guarded.url, timeout=30) as c:
        updates = _metric(c.get("/metrics").text, "routing_env_policy_updates_total")
        for cost in (1e308, 1e308, 1e308, 1e300):
            d = c.post("/v1/route", json={"features": x, "allowed_models": [data.models[0]]}).json()
            r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0, "cost": cost})
            assert r.status_code == 422 and "cost must be a USD amount in [0, " in r.json()["detail"]
            view = c.get(f"/v1/decisions/{d['decision_id']}").json()
            assert view["status"] == "open" and view["feedback"] is None
        assert _metric(c.get("/metrics").text, "routing_env_policy_updates_total") == updates
        for i in range(20):
            assert c.post("/v1/route", json={"features": data.features[i].tolist()}).status_code == 200
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


def test_invalid_utf8_in_request_id_is_422(guarded: Server) -> None:
    client = Client(guarded.url)
    try:
        status, body = client.post(
            "/v1/route", b'{"features": [0, 0, 0, 0, 0, 0, 0, 0], "request_id": "\xff\xfe"}'
        )
    finally:
        client.close()
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"  # type: ignore[index]


def test_concurrent_duplicate_feedback_is_409_never_500(guarded: Server, data: LoggedDataset) -> None:
    with httpx.Client(base_url=guarded.url, timeout=30) as c:
        ids = [c.post("/v1/route", json={"features": data.features[i].tolist()}).json()["decision_id"]
               for i in range(60)]  # fmt: skip
    statuses: list[int] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        client = Client(guarded.url)
        order = np.random.default_rng(worker).permutation(len(ids))
        try:
            for j in order:
                status, _ = client.post("/v1/feedback", {"decision_id": ids[j], "quality": 0.5, "cost": 1e-4})
                with lock:
                    statuses.append(status)
        finally:
            client.close()

    in_threads(16, send)
    assert len(statuses) == 960 and set(statuses) <= {200, 409}
    assert statuses.count(200) == 60


# ---------------------------------------------------------------------------------------------------- policy files
def _variant(base: Path, policy_dir: Path, name: str) -> Path:
    path = base / name
    shutil.copytree(policy_dir, path)
    return path


def _edit(path: Path, **config: object) -> None:
    doc = json.loads((path / "policy.json").read_text())
    for key, value in config.items():
        if key == "kind":
            doc["kind"] = value
        else:
            doc["config"][key] = value
    (path / "policy.json").write_text(json.dumps(doc))


def _hostile_dirs(base: Path, policy_dir: Path) -> dict[str, Path]:
    out = {}
    for name, kind in (("cli-kind", "agents.cli.__main__.X"), ("evil-kind", "evil_mod.X")):
        out[name] = _variant(base, policy_dir, name)
        _edit(out[name], kind=kind)
    out["pickle-json"] = _variant(base, policy_dir, "pickle-json")
    (out["pickle-json"] / "policy.json").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
    for name, width in (("width-negative", -5), ("width-200000", 200_000)):
        out[name] = _variant(base, policy_dir, name)
        _edit(out[name], n_features=width)
    out["deep-json"] = _variant(base, policy_dir, "deep-json")
    (out["deep-json"] / "policy.json").write_text("[" * 200_000 + "]" * 200_000)
    out["header-1e15"] = _variant(base, policy_dir, "header-1e15")
    with zipfile.ZipFile(out["header-1e15"] / "arrays.npz", "w") as z, z.open("A.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**15,)})
    out["nan-weights"] = _variant(base, policy_dir, "nan-weights")
    with np.load(policy_dir / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["tq"] = np.full_like(arrays["tq"], np.nan)
    np.savez(out["nan-weights"] / "arrays.npz", **arrays)
    out["zip-bomb"] = _variant(base, policy_dir, "zip-bomb")  # 64 MiB of zeros declared, ~64 KiB on disk
    with (
        zipfile.ZipFile(out["zip-bomb"] / "arrays.npz", "w", zipfile.ZIP_DEFLATED) as z,
        z.open("A.npy", "w", force_zip64=True) as f,
    ):
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (8 * MIB,)})
        for _ in range(64):
            f.write(b"\0" * MIB)
    out["link-out"] = _variant(base, policy_dir, "link-out")
    (out["link-out"] / "arrays.npz").unlink()
    os.symlink(REPO / "pyproject.toml", out["link-out"] / "arrays.npz")
    return out


def test_hostile_policy_directories_are_4xx_and_load_nothing(
    guarded: Server, policy_dir: Path, evil: Path, tmp_path: Path
) -> None:
    rss = guarded.rss_bytes()
    answers = {}
    with httpx.Client(base_url=guarded.url, timeout=60, headers=AUTH) as c:
        for name, path in _hostile_dirs(tmp_path, policy_dir).items():
            r = c.post("/v1/policy", json={"path": str(path), "version": name})
            answers[name] = (r.status_code, r.json()["detail"])
        r = c.post("/v1/policy", json={"path": str(policy_dir) + "\x00/etc"})
        answers["nul-byte"] = (r.status_code, r.text)
        outside = [c.post("/v1/policy", json={"path": p}).json()["detail"].replace(p, "<path>")
                   for p in ("/etc", "/no/such/dir")]  # fmt: skip
        assert c.post("/v1/route", json={"features": [0.0] * 8}).json()["policy_version"] == "v1"
    assert all(400 <= status < 500 for status, _ in answers.values()), answers
    assert "unknown policy kind 'agents.cli.__main__.X'" in answers["cli-kind"][1]
    assert not (evil / "imported").exists()  # the kind named a module; nothing imported it
    assert "not UTF-8 JSON" in answers["pickle-json"][1]
    assert "n_features must be null or an integer ≥ 0" in answers["width-negative"][1]
    assert "n_features=200000 over 4 models implies" in answers["width-200000"][1]
    assert "nests deeper than 64 levels" in answers["deep-json"][1]
    assert "declares shape (1000000000000000,)" in answers["header-1e15"][1]
    assert "holds 36 NaN or infinite values" in answers["nan-weights"][1]
    assert "above the 16777216-byte limit" in answers["zip-bomb"][1]
    assert "a link that leads outside the policy root" in answers["link-out"][1]
    assert len(set(outside)) == 1 and "outside the policy root" in outside[0]
    assert guarded.rss_bytes() - rss < 100 * MIB


def test_a_second_server_on_the_same_store_is_refused(
    guarded: Server, policy_dir: Path, tmp_path: Path
) -> None:
    second = Server(guarded.store, policy_dir, log=tmp_path / "second.log")
    code, out = second.run_to_exit(timeout=120)
    assert code == 2 and "is already open for writing by pid" in out and "a store has one writer" in out
    assert httpx.post(guarded.url + "/v1/route", json={"features": [0.0] * 8}, timeout=30).status_code == 200


# ---------------------------------------------------------------------------------------------------- admin, warnings
def test_admin_is_closed_without_a_token_and_the_deterministic_policy_is_named(
    open_server: Server, guarded: Server
) -> None:
    with httpx.Client(base_url=open_server.url, timeout=30) as c:
        for method, path in (("post", "/v1/checkpoint"), ("get", "/v1/export")):
            r = c.request(method, path)
            assert r.status_code == 403 and "ROUTING_ENV_API_TOKEN" in r.json()["detail"]
    log = open_server.output()
    assert "admin endpoints are closed (403)" in log
    assert "warning: the live policy LinUCB (version 'v1') is deterministic" in log and "epsilon=0.05" in log
    assert "is deterministic" not in guarded.output()


def test_insecure_admin_is_loopback_only_with_a_warning(policy_dir: Path, tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.1"):
        code, out = Server(tmp_path / "a.db", policy_dir, "--host", host, token=None).run_to_exit()
        assert code == 2 and f"refusing to bind {host} without an admin token" in out
    code, out = Server(
        tmp_path / "b.db", policy_dir, "--host", "0.0.0.0", "--insecure-admin", token=None
    ).run_to_exit()
    assert code == 2 and "--insecure-admin opens the admin endpoints to loopback clients only" in out
    srv = Server(tmp_path / "c.db", policy_dir, "--insecure-admin", "--rate-limit", "1", "--rate-burst", "5",
                 token=None)  # fmt: skip
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.post("/v1/checkpoint").status_code == 200
            statuses = [c.post("/v1/route", json={"features": [0.0] * 8}).status_code for _ in range(12)]
            assert statuses[:4] == [200] * 4 and statuses.count(429) >= 6, statuses
            assert all(c.get("/healthz").status_code == 200 for _ in range(10))
        assert (
            "warning: --insecure-admin: the admin endpoints are open to every loopback client" in srv.output()
        )
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------------- exhaustion
def _store_bytes(store: Path) -> int:
    return sum(Path(str(store) + s).stat().st_size for s in ("", "-wal") if Path(str(store) + s).exists())


@pytest.mark.slow
def test_huge_prompts_beside_features_do_not_grow_memory_or_the_store(
    open_server: Server, data: LoggedDataset
) -> None:
    prompt = "😀" * 200_000  # 800 kB of UTF-8, under the 1 MiB body limit
    bodies = [json.dumps({"features": data.features[i].tolist(), "prompt": prompt}, ensure_ascii=False).encode()
              for i in range(4)]  # fmt: skip
    rss, size = open_server.rss_bytes(), _store_bytes(open_server.store)
    statuses: list[int] = []

    def send(worker: int) -> None:
        client = Client(open_server.url)
        try:
            for _ in range(300):
                statuses.append(client.post("/v1/route", bodies[worker])[0])
        finally:
            client.close()

    in_threads(4, send)
    assert statuses == [200] * 1200
    grown_rss, grown_store = open_server.rss_bytes() - rss, _store_bytes(open_server.store) - size
    # Before: +1.8 GB of memory and +1.85 GB of store for the same requests.
    assert grown_rss < 150 * MIB, grown_rss
    assert grown_store < 16 * MIB, grown_store
    d = httpx.post(open_server.url + "/v1/route", content=bodies[0], timeout=30).json()
    view = httpx.get(f"{open_server.url}/v1/decisions/{d['decision_id']}", timeout=30).json()
    assert view["prompt"] is None and view["prompt_chars"] == 200_000


def test_half_sent_requests_are_closed_after_the_read_timeout(open_server: Server) -> None:
    host, port = "127.0.0.1", open_server.port
    socks = []
    for i in range(200):
        s = socket.create_connection((host, port), timeout=10)
        if i % 2:
            s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: appl")  # half the headers
        else:
            s.sendall(
                b'POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"feat'
            )  # half a body
        socks.append(s)
    deadline = time.monotonic() + 30  # the server's read timeout is 1 s (margin for a loaded machine)
    open_socks = list(socks)
    answers = b""
    # epoll, not select(): the test process may hold file descriptors past select's limit of 1024.
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while open_socks and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                chunk = s.recv(4096)
                answers += chunk
                if not chunk:
                    sel.unregister(s)
                    open_socks.remove(s)
    for s in socks:
        s.close()
    assert open_socks == [], f"{len(open_socks)} of 200 half-sent connections still open after 30 s"
    assert answers.count(b"408 Request Timeout") >= 100
    assert (
        httpx.post(open_server.url + "/v1/route", json={"features": [0.0] * 8}, timeout=30).status_code == 200
    )
