"""The real service: ``routing-env serve`` in a uvicorn process on a loopback port, under load and kill -9."""

from __future__ import annotations

import http.client
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agents.online import SQLiteDecisionStore
from agents.routers import LinUCB
from routing_env.data import LoggedDataset
from routing_env.policy import load_policy
from tests.agents.online.online_policies import assert_same_state
from tests.agents.online.serving import AUTH, Client, Server

pytest.importorskip("uvicorn")


def _server(tmp_path: Path, policy_dir: Path) -> Iterator[Server]:
    # Hot swaps load from pytest's temporary tree (the policies of these tests live in its directories).
    root = os.path.commonpath([tmp_path, policy_dir])
    srv = Server(tmp_path / "store.db", policy_dir, "--checkpoint-every", "50", "--policy-root", root)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(tmp_path: Path, policy_dir: Path) -> Iterator[Server]:
    """A fresh server (for the kill -9 test)."""
    yield from _server(tmp_path, policy_dir)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, policy_dir: Path) -> Iterator[Server]:
    """One server for the HTTP and load tests (a start costs seconds of imports)."""
    yield from _server(tmp_path_factory.mktemp("shared"), policy_dir)


def replayed(policy_dir: Path | str, store: SQLiteDecisionStore, after_seq: int = 0) -> object:
    """The policy saved in ``policy_dir`` with the applied feedback of ``store`` after ``after_seq`` replayed."""
    policy = load_policy(policy_dir)
    # The router primes the policy's lazily built caches; do the same.
    policy.action_probabilities(np.zeros((1, policy.n_features), dtype=np.float32))
    for fb, d in store.feedback(after_seq=after_seq):
        if fb.applied:
            policy.update_outcomes(
                d.features[None, :], np.array([d.action]), np.array([fb.quality]), np.array([fb.cost])
            )
    return policy


def served_policy(srv: Server) -> object:
    path = httpx.post(srv.url + "/v1/checkpoint", headers=AUTH, timeout=30).json()["path"]
    return load_policy(path)


class Traffic:
    """``clients`` threads, each with its own connection, sending route + feedback pairs."""

    def __init__(self, url: str, data: LoggedDataset, clients: int, pairs: int | None) -> None:
        self.url, self.data, self.clients, self.pairs = url, data, clients, pairs
        self.routed: list[str] = []
        self.acked: list[str] = []
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, worker: int) -> None:
        rng = np.random.default_rng(worker)
        features = self.data.features.tolist()
        client = Client(self.url)
        i = 0
        try:
            while not self.stop.is_set() and (self.pairs is None or i < self.pairs):
                i += 1
                row = int(rng.integers(len(features)))
                status, d = client.post("/v1/route", {"features": features[row]})
                with self._lock:
                    self.statuses.append(status)
                    if status == 200:
                        self.routed.append(str(d["decision_id"]))
                if status != 200:
                    continue
                a = int(d["action"])  # type: ignore[call-overload]
                body = {
                    "decision_id": d["decision_id"],
                    "quality": float(self.data.quality[row, a]),
                    "cost": float(self.data.cost[row, a]),
                }
                status, _ = client.post("/v1/feedback", body)
                with self._lock:
                    self.statuses.append(status)
                    if status == 200:
                        self.acked.append(str(d["decision_id"]))
        except (OSError, http.client.HTTPException) as exc:  # the server died (the kill -9 test)
            with self._lock:
                self.errors.append(repr(exc))
        finally:
            client.close()

    def start(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=300)


def test_route_feedback_swap_and_export_over_http(
    server: Server, data: LoggedDataset, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        d = c.post("/v1/route", json={"features": data.features[600].tolist(), "request_id": "r1"}).json()
        assert c.post("/v1/route", json={"features": [0.0] * 8, "request_id": "r1"}).json() == d
        f = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.9, "cost": 1e-4})
        assert f.status_code == 200 and f.json()["applied"]
        assert (
            c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.9}).status_code == 409
        )
        assert c.post("/v1/feedback", json={"decision_id": "nope", "quality": 0.9}).status_code == 404
        assert c.post("/v1/route", json={"features": [0.0] * 7}).status_code == 422
        new = (
            LinUCB(alpha=0.0, seed=3)
            .fit(data.select(np.arange(500, 1000)), cost_weight=0.5)
            .save(tmp_path / "p2")
        )
        assert c.post("/v1/policy", json={"path": str(new), "version": "retrained"}).status_code == 401
        exported_before = c.get("/v1/export", params={"format": "csv"}, headers=AUTH).text.count("\n")
        r = c.post("/v1/policy", json={"path": str(new), "version": "retrained"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == "retrained"
        assert c.post("/v1/route", json={"features": [0.0] * 8}).json()["policy_version"] == "retrained"
        export = c.get("/v1/export", params={"format": "csv"}, headers=AUTH)
        assert export.status_code == 200 and export.text.count("\n") == exported_before
        assert 'routing_env_policy_info{version="retrained"' in c.get("/metrics").text
        assert c.get("/openapi.json").json()["info"]["title"] == "routing-env online router"


@pytest.mark.slow
def test_load_16_clients_x_1000_pairs(shared: Server, data: LoggedDataset, tmp_path: Path) -> None:
    before = httpx.post(shared.url + "/v1/checkpoint", headers=AUTH, timeout=30).json()
    # The server keeps only its newest checkpoints: keep a copy of this one to replay from.
    before["path"] = str(shutil.copytree(before["path"], tmp_path / "before"))
    traffic = Traffic(shared.url, data, clients=16, pairs=1000).start()
    traffic.join()
    assert traffic.errors == []
    assert len(traffic.statuses) == 32_000 and set(traffic.statuses) == {200}
    assert len(traffic.acked) == 16_000
    store = SQLiteDecisionStore(shared.store, readonly=True)
    stored = {fb.decision_id for fb, _ in store.feedback(after_seq=before["last_feedback_seq"])}
    assert stored == set(traffic.acked)
    live = served_policy(shared)
    start = load_policy(before["path"])
    assert live.n_updates - start.n_updates == 16_000  # type: ignore[attr-defined]
    assert_same_state(live, replayed(before["path"], store, before["last_feedback_seq"]), tmp_path)


@pytest.mark.slow
def test_kill_9_mid_load_loses_nothing_acknowledged(
    server: Server, data: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    traffic = Traffic(server.url, data, clients=4, pairs=None).start()
    deadline = time.monotonic() + 30
    while len(traffic.acked) < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    traffic.stop.set()
    traffic.join()
    acked, routed = set(traffic.acked), set(traffic.routed)
    assert len(acked) >= 400 and set(traffic.statuses) == {200}
    server.start()  # same command, same store: resumes from the last checkpoint + replay
    store = SQLiteDecisionStore(tmp_path / "store.db", readonly=True)
    assert acked <= {fb.decision_id for fb, _ in store.feedback()}
    assert routed <= {d.decision_id for d in store.decisions()}
    restored = served_policy(server)
    assert_same_state(restored, replayed(policy_dir, store), tmp_path)
    # Still serving, and the pending decisions from before the crash accept their feedback.
    open_ids = [d.decision_id for d in store.decisions(status="open")]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for decision_id in open_ids[:3]:
            assert (
                c.post("/v1/feedback", json={"decision_id": decision_id, "quality": 0.5}).status_code == 200
            )
        assert c.post("/v1/route", json={"features": data.features[0].tolist()}).status_code == 200
