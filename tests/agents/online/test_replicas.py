"""Several ``routing-env serve`` replicas (separate uvicorn processes on loopback ports) on one PostgreSQL log.

Under concurrent load spread over the replicas: no 5xx, every acknowledged feedback is in the database once, and
every replica's policy equals a replay of the log from the first checkpoint (saved arrays compared exactly). A
replica killed with SIGKILL loses nothing acknowledged, and a new one catches up from the latest checkpoint to
zero lag. With the database stopped, requests get 503 with a clear body, never 200, and service resumes after.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agents.online import OnlineRouter
from agents.online.stores.base import Checkpoint
from agents.online.stores.postgres import PostgresDecisionStore
from agents.routers import LinUCB
from routing_env.policy import load_policy
from tests.agents.online.gateway.servers import ProcessServer, free_port
from tests.agents.online.online_policies import assert_same_state

pytestmark = pytest.mark.slow
MODELS = ["small", "medium", "large"]
TOKEN = "replica-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy"
    LinUCB(alpha=0.5, epsilon=0.1, models=MODELS, seed=0).save(path)
    return path


def _replica(url: str, tmp_path: Path, policy: Path, n: int) -> ProcessServer:
    port = free_port()
    args = [sys.executable, "-m", "agents.cli", "serve", "--store", url, "--policy", str(policy)]
    args += ["--port", str(port), "--checkpoint-every", "100", "--seed", "1"]
    return ProcessServer(args, port, tmp_path / f"replica{n}.log", {"ROUTING_ENV_API_TOKEN": TOKEN})


@contextmanager
def _replicas(url: str, tmp_path: Path, policy: Path, count: int) -> Iterator[list[ProcessServer]]:
    """``count`` replicas started on ``url``; every server in the list when the block ends is stopped (a test may
    replace one)."""
    servers = [_replica(url, tmp_path, policy, n).start() for n in range(count)]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def _load(urls: list[str], pairs: int, clients: int, acked: dict[str, int], statuses: list[int]) -> None:
    """``clients`` threads doing ``pairs`` route + feedback pairs in all, each pair's feedback at the next replica."""
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        with httpx.Client(timeout=30) as http:
            for i in range(k, pairs, clients):
                x = rng.normal(size=4).tolist()
                try:
                    r = http.post(urls[i % len(urls)] + "/v1/route", json={"features": x})
                except httpx.TransportError:  # a killed replica: no answer, so nothing acknowledged
                    continue
                with lock:
                    statuses.append(r.status_code)
                if r.status_code != 200:
                    continue
                decision = r.json()["decision_id"]
                body = {"decision_id": decision, "quality": float(rng.random()), "cost": 1e-3}
                try:
                    f = http.post(urls[(i + 1) % len(urls)] + "/v1/feedback", json=body)
                except httpx.TransportError:
                    continue
                with lock:
                    statuses.append(f.status_code)
                    if f.status_code == 200:
                        acked[decision] = int(f.json()["seq"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def _routes(server: ProcessServer, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """``n`` route answers of ``server`` (each must be a 200) for random queries."""
    got = []
    for _ in range(n):
        r = httpx.post(server.url + "/v1/route", json={"features": rng.normal(size=4).tolist()}, timeout=5)
        assert r.status_code == 200, r.text
        got.append(r.json())
    return got


def _caught_up(server: ProcessServer, head: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(server.url + "/healthz", timeout=5).json()
        if (health["log_position"] == head and health["log_lag"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def _replayed(url: str, policy: Path) -> OnlineRouter:
    """A router whose policy is the first policy plus the whole log, replayed in this process."""
    router = OnlineRouter.restore(PostgresDecisionStore(url, readonly=True), seed=1)
    first = Checkpoint(0, 0.0, "v1", str(policy), 0)
    with router._lock:
        router._served = router._load(first)
        router._replay(first)
    return router


def _check_log(url: str, acked: dict[str, int]) -> int:
    """Every acknowledged feedback is in the log once, at the position it was acknowledged with; the head."""
    with PostgresDecisionStore(url, readonly=True) as store:
        logged = {d.decision_id: fb.seq for fb, d in store.feedback()}
        swaps = [e.position for e in store.log_entries(limit=100_000) if e.kind == "swap"]
        head = store.log_position()
    assert sorted([*logged.values(), *swaps]) == list(range(1, head + 1))  # gap-free, each position once
    assert {d: logged.get(d) for d in acked} == acked
    return head


def _same_policies(servers: list[ProcessServer], url: str, policy: Path, tmp_path: Path) -> None:
    replay = _replayed(url, policy)
    for n, server in enumerate(servers):
        r = httpx.post(server.url + "/v1/checkpoint", headers=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        assert_same_state(replay.policy, load_policy(r.json()["path"]), tmp_path / f"cmp{n}")
    replay.store.close()


def test_three_replicas_under_load_learn_the_same_policy(postgres_url: str, tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    with _replicas(postgres_url, tmp_path, policy, 3) as servers:
        acked: dict[str, int] = {}
        statuses: list[int] = []
        _load([s.url for s in servers], 1000, 16, acked, statuses)
        assert statuses and max(statuses) < 500 and len(acked) == 1000
        head = _check_log(postgres_url, acked)
        for s in servers:
            health = _caught_up(s, head)
            assert health["log_lag"] == 0 and health["log_position"] == head, health
        _same_policies(servers, postgres_url, policy, tmp_path)


def test_a_swap_at_one_replica_mid_load_switches_every_replica_at_one_log_position(
    postgres_url: str, tmp_path: Path
) -> None:
    policy = _policy(tmp_path)
    LinUCB(alpha=1.5, epsilon=0.2, models=MODELS, seed=5).save(tmp_path / "candidate")
    with _replicas(postgres_url, tmp_path, policy, 2) as servers:
        acked: dict[str, int] = {}
        statuses: list[int] = []
        load = threading.Thread(target=_load, args=([s.url for s in servers], 600, 8, acked, statuses))
        load.start()
        while len(acked) < 150 and load.is_alive():
            time.sleep(0.01)
        r = httpx.post(
            servers[1].url + "/v1/policy",
            json={"path": str(tmp_path / "candidate")},
            headers=ADMIN,
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["version"] == "v2", r.text
        load.join(120)
        assert statuses and max(statuses) < 500 and len(acked) == 600
        head = _check_log(postgres_url, acked)
        with PostgresDecisionStore(postgres_url, readonly=True) as store:
            swaps = [e for e in store.log_entries(limit=100_000) if e.kind == "swap"]
            by_version = {d.decision_id: d.policy_version for d in store.decisions()}
        assert len(swaps) == 1 and 150 < swaps[0].position < head
        # feedback after the swap's position was learned by v2 at whichever replica took it
        after = {d for d, seq in acked.items() if seq > swaps[0].position}
        assert after and "v2" in {by_version[d] for d in after}
        for s in servers:
            health = _caught_up(s, head)
            assert health["policy_version"] == "v2" and health["log_lag"] == 0, health
        _same_policies(servers, postgres_url, policy, tmp_path)


def test_one_request_id_sent_to_two_replicas_at_once_gets_one_answer(
    postgres_url: str, tmp_path: Path
) -> None:
    policy = _policy(tmp_path)
    with _replicas(postgres_url, tmp_path, policy, 2) as servers:
        answers: dict[int, list[tuple[int, str]]] = {}
        for k in range(30):
            barrier = threading.Barrier(2)
            got: list[tuple[int, str]] = []

            def send(url: str, k: int = k, barrier: threading.Barrier = barrier, got: list = got) -> None:
                body = {"features": [0.1 * k, 0.2, 0.3, 0.4], "request_id": f"retry-{k}"}
                with httpx.Client(timeout=30) as http:
                    barrier.wait()
                    r = http.post(url + "/v1/route", json=body)
                got.append((r.status_code, r.json().get("decision_id", r.text)))

            threads = [threading.Thread(target=send, args=(s.url,)) for s in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            answers[k] = got
        for k, got in answers.items():
            assert [status for status, _ in got] == [200, 200], (k, got)
            assert got[0][1] == got[1][1], (k, got)  # the same decision from either replica
        with PostgresDecisionStore(postgres_url, readonly=True) as store:
            assert len(store.decisions()) == 30


def test_a_canary_started_at_one_replica_serves_at_every_replica_and_ends_everywhere(
    postgres_url: str, tmp_path: Path
) -> None:
    policy = _policy(tmp_path)
    LinUCB(alpha=1.5, epsilon=0.2, models=MODELS, seed=5).save(tmp_path / "candidate")

    def canary_at(server: ProcessServer) -> str | None:
        r = httpx.get(server.url + "/v1/canary", headers=ADMIN, timeout=5)
        return r.json()["version"] if r.status_code == 200 else None

    def wait_for(server: ProcessServer, version: str | None) -> None:
        deadline = time.monotonic() + 15
        while canary_at(server) != version:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.05)

    with _replicas(postgres_url, tmp_path, policy, 2) as servers:
        body = {"candidate": str(tmp_path / "candidate"), "split": 0.3, "min_decisions": 100_000}
        r = httpx.post(servers[0].url + "/v1/canary", json=body, headers=ADMIN, timeout=30)
        assert r.status_code == 201 and r.json()["version"] == "canary-1", r.text
        wait_for(servers[1], "canary-1")  # the other replica joins it from the serving events
        rng = np.random.default_rng(3)
        for server in servers:  # both arms serve at each replica
            served = {d["policy_version"] for d in _routes(server, rng, 60)}
            assert served == {"v1", "canary-1"}, server.url
        r = httpx.delete(servers[1].url + "/v1/canary", headers=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        wait_for(servers[0], None)  # and leaves it when that one ends it
        events = httpx.get(servers[0].url + "/v1/serving-events", headers=ADMIN, timeout=5).json()["events"]
        assert [e["event"] for e in events] == ["canary_start", "canary_stop"]


def test_a_shadow_registered_at_one_replica_is_scored_at_every_replica_until_removed(
    postgres_url: str, tmp_path: Path
) -> None:
    policy = _policy(tmp_path)
    LinUCB(alpha=1.5, epsilon=0.2, models=MODELS, seed=5).save(tmp_path / "candidate")
    rng = np.random.default_rng(4)

    def routes(server: ProcessServer, n: int) -> list[str]:
        return [d["decision_id"] for d in _routes(server, rng, n)]

    def scored(ids: list[str], timeout_s: float = 10) -> set[str]:
        with PostgresDecisionStore(postgres_url, readonly=True) as store:
            deadline = time.monotonic() + timeout_s
            while True:
                rows = store._read(
                    "SELECT decision_id FROM shadow_probabilities WHERE name = 'cand' AND decision_id = ANY(%s)",
                    (ids,),
                )
                if len(rows) == len(ids) or time.monotonic() > deadline:
                    return {str(r[0]) for r in rows}
                time.sleep(0.1)

    with _replicas(postgres_url, tmp_path, policy, 2) as servers:
        body = {"name": "cand", "path": str(tmp_path / "candidate")}
        r = httpx.post(servers[0].url + "/v1/shadows", json=body, headers=ADMIN, timeout=30)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 20  # the other replica reads the registry every second
        while scored(ids := routes(servers[1], 10), timeout_s=1.0) != set(ids):
            assert time.monotonic() < deadline, servers[1].tail()
        ids = routes(servers[1], 30)
        assert scored(ids) == set(ids)  # scored where it was not registered
        r = httpx.delete(servers[1].url + "/v1/shadows/cand", headers=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while scored(later := routes(servers[0], 10), timeout_s=0.5):
            assert time.monotonic() < deadline, servers[0].tail()
        later = routes(servers[0], 30)
        assert scored(later, timeout_s=1.0) == set()  # and no longer where it was registered


def test_a_killed_replica_loses_nothing_and_a_new_one_catches_up(postgres_url: str, tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    with _replicas(postgres_url, tmp_path, policy, 2) as servers:
        acked: dict[str, int] = {}
        statuses: list[int] = []
        load = threading.Thread(target=_load, args=([s.url for s in servers], 600, 8, acked, statuses))
        load.start()
        time.sleep(2.0)
        servers[1].kill()  # SIGKILL mid-load: its in-flight requests fail at the client, never half-done
        load.join(120)
        servers[1] = _replica(postgres_url, tmp_path, policy, 2).start()
        head = _check_log(postgres_url, acked)
        health = _caught_up(servers[1], head)
        assert health["log_lag"] == 0 and health["log_position"] == head, health
        _same_policies(servers, postgres_url, policy, tmp_path)


def test_requests_get_503_while_the_database_is_down_and_service_resumes(
    own_cluster: Any, tmp_path: Path
) -> None:
    import psycopg

    from tests.pg_cluster import with_database

    with psycopg.connect(own_cluster.url, autocommit=True) as admin:
        admin.execute('CREATE DATABASE "replicas"')
    url = with_database(own_cluster.url, "replicas")
    policy = _policy(tmp_path)
    with _replicas(url, tmp_path, policy, 2) as servers:
        with httpx.Client(timeout=30) as http:
            d = http.post(servers[0].url + "/v1/route", json={"features": [0.0] * 4}).json()["decision_id"]
            own_cluster.stop("immediate")
            for s in servers:
                r = http.post(s.url + "/v1/route", json={"features": [0.1] * 4})
                assert r.status_code == 503 and "decision store" in r.text, r.text
                f = http.post(s.url + "/v1/feedback", json={"decision_id": d, "quality": 0.5})
                assert f.status_code == 503 and "decision store" in f.text, f.text
                assert http.get(s.url + "/healthz").status_code == 503
            own_cluster.start()
            deadline = time.monotonic() + 60
            for s in servers:  # each replica resumes on its own store connections, without a restart
                while http.post(s.url + "/v1/route", json={"features": [0.2] * 4}).status_code != 200:
                    assert time.monotonic() < deadline, "service did not resume"
                    time.sleep(0.2)
            assert (
                http.post(
                    servers[1].url + "/v1/feedback", json={"decision_id": d, "quality": 0.5}
                ).status_code
                == 200
            )
        acked: dict[str, int] = {}
        statuses: list[int] = []
        _load([s.url for s in servers], 100, 4, acked, statuses)
        assert max(statuses) < 500 and len(acked) == 100
        head = _check_log(url, acked)
        for s in servers:
            assert _caught_up(s, head)["log_lag"] == 0
        _same_policies(servers, url, policy, tmp_path)
