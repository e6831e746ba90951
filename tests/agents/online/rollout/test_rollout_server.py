"""The rollout workflow against the real service (``routing-env serve`` in a uvicorn process on loopback):
shadows registered and reported on live traffic, a failing shadow that fails no request, and ``routing-env
promote`` — its exit codes, the swap at once through a running server, and its history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agents.cli import main
from agents.online import SQLiteDecisionStore
from tests.agents.online.rollout import policies as P
from tests.agents.online.serving import AUTH, Client, Server

pytest.importorskip("uvicorn")


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    P.live().save(root / "live")
    P.better().save(root / "better")
    P.worse().save(root / "worse")
    P.BrokenPolicy(np.zeros((3, 2)), np.zeros(3), 0.3).save(root / "broken")
    return root


@pytest.fixture()
def server(tmp_path: Path, saved: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "store.db", saved / "live", "--policy-root", str(saved))
    srv.args[1:3] = ["-c", P.WITH_TEST_POLICIES]
    srv.start()
    yield srv
    srv.stop()


def traffic(url: str, n: int, seed: int) -> None:
    """``n`` route + feedback pairs, qualities from the known world; every answer must be a 200."""
    rng = np.random.default_rng(seed)
    client = Client(url)
    try:
        for _ in range(n):
            x = rng.normal(size=2)
            status, d = client.post("/v1/route", {"features": x.tolist()})
            assert status == 200, d
            q = float(np.clip(P.quality(x)[0, P.MODELS.index(str(d["model"]))] + rng.normal(scale=0.1), 0, 1))
            status, fb = client.post("/v1/feedback", {"decision_id": d["decision_id"], "quality": q})
            assert status == 200, fb
    finally:
        client.close()


def test_shadows_on_live_traffic_then_promote_through_the_server(
    server: Server, saved: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("better", "worse", "broken"):
        r = httpx.post(
            server.url + "/v1/shadows", json={"name": name, "path": str(saved / name)}, headers=AUTH
        )
        assert r.status_code == 201, r.text
    traffic(server.url, 1200, seed=1)
    reports = {
        name: httpx.get(f"{server.url}/v1/shadows/{name}/report", headers=AUTH, timeout=60).json()
        for name in ("better", "worse", "broken")
    }
    live = P.truth(P.live())
    for name, policy in (("better", P.better()), ("worse", P.worse())):
        rep = reports[name]
        assert rep["n_decisions"] == 1200 and rep["status"] == "active"
        dr = {e["estimator"]: e for e in rep["estimates"]}["DR"]
        assert dr["low"] - 0.02 < P.truth(policy) - live < dr["high"] + 0.02
    assert reports["better"]["gate"]["promote"] and reports["worse"]["gate"]["reason"] == "worse"
    assert reports["broken"]["status"] == "failed" and "unreachable" in reports["broken"]["error"]

    monkeypatch.setenv("ROUTING_ENV_API_TOKEN", AUTH["Authorization"].removeprefix("Bearer "))
    assert main(["promote", "--url", server.url, "--candidate", str(saved / "worse")]) == 1
    refused = capsys.readouterr().out
    assert "refuse: the candidate is worse" in refused and "bounds [" in refused and "not promoted" in refused
    assert httpx.get(server.url + "/healthz").json()["policy_version"] == "v1"
    assert (
        main(["promote", "--url", server.url, "--candidate", str(saved / "better"), "--margin", "0.01"]) == 0
    )
    promoted = capsys.readouterr().out
    assert "promote: the lower bound" in promoted and "'v2'" in promoted
    status, d = Client(server.url).post("/v1/route", {"features": [0.0, 0.0]})
    assert status == 200 and d["policy_version"] == "v2"  # switched at once

    # The history is read beside the running server (read-only).
    assert main(["promote", "--store", str(server.store), "--history"]) == 0
    history = capsys.readouterr().out
    assert (
        "#1 " in history and "refused (worse)" in history and "#2 " in history and "promoted to v2" in history
    )
    assert "POST /v1/promote" in history


def test_promote_on_a_store_exit_codes_and_history(
    tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = Server(tmp_path / "store.db", saved / "live", "--policy-root", str(saved))
    srv.args[1:3] = ["-c", P.WITH_TEST_POLICIES]
    srv.start()
    try:
        traffic(srv.url, 1100, seed=2)
        # A running server holds the SQLite store: promoting on it is refused with what to do instead.
        assert main(["promote", "--store", str(srv.store), "--candidate", str(saved / "better")]) == 2
        err = capsys.readouterr().err
        assert "already open for writing" in err and "promote through it with --url" in err
    finally:
        srv.stop()
    args = ["promote", "--store", str(srv.store), "--candidate"]
    assert main([*args, str(saved / "better"), "--min-decisions", "5000"]) == 1
    assert (
        "refuse: 1100 logged decisions, the gate needs at least min_decisions=5000" in capsys.readouterr().out
    )
    assert main([*args, str(saved / "worse")]) == 1
    assert "not promoted" in capsys.readouterr().out
    assert main([*args, str(saved / "better"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"promoted": true' in out and '"version": "v2"' in out
    with SQLiteDecisionStore(srv.store, readonly=True) as store:
        history = store.gate_history()
        assert [(h.promote, h.reason, h.version) for h in history] == [
            (False, "too_few_decisions", None),
            (False, "worse", None),
            (True, "promote", "v2"),
        ]
        assert history[0].command.startswith("routing-env promote --store")
        assert store.latest_checkpoint().policy_version == "v2"  # type: ignore[union-attr]
    # The next server on the store serves the candidate.
    again = Server(srv.store, None)
    again.args[1:3] = ["-c", P.WITH_TEST_POLICIES]
    again.start()
    try:
        assert httpx.get(again.url + "/healthz").json()["policy_version"] == "v2"
    finally:
        again.stop()


@pytest.mark.parametrize(("candidate", "event"), [("worse", "canary_rollback"), ("better", "canary_promote")])
def test_serve_canary_promotes_the_better_and_rolls_back_the_worse(
    tmp_path: Path, saved: Path, candidate: str, event: str
) -> None:
    srv = Server(
        tmp_path / "store.db", saved / "live", "--policy-root", str(saved),
        "--canary", "0.2", "--canary-policy", str(saved / candidate), "--canary-min-decisions", "300",
    )  # fmt: skip
    srv.args[1:3] = ["-c", P.WITH_TEST_POLICIES]
    srv.start()
    try:
        assert httpx.get(srv.url + "/v1/canary", headers=AUTH).json()["version"] == "canary-1"
        for round_ in range(40):  # bounded: 40 × 200 pairs at most
            traffic(srv.url, 200, seed=100 + round_)
            if httpx.get(srv.url + "/v1/canary", headers=AUTH).status_code == 404:
                break
        events = httpx.get(srv.url + "/v1/serving-events", headers=AUTH).json()["events"]
        assert [e["event"] for e in events] == ["canary_start", event]
        version = httpx.get(srv.url + "/healthz").json()["policy_version"]
        assert (version == "v1") == (candidate == "worse")
    finally:
        srv.stop()
    assert "canary canary-1:" in srv.output()


def test_a_restart_resumes_the_canary_and_a_start_up_canary_replaces_another(
    tmp_path: Path, saved: Path
) -> None:
    base = ["--policy-root", str(saved)]
    canary = ["--canary", "0.2", "--canary-policy", str(saved / "worse"), "--canary-min-decisions", "100000"]
    srv = Server(tmp_path / "store.db", saved / "live", *base, *canary)
    srv.args[1:3] = ["-c", P.WITH_TEST_POLICIES]

    def events() -> list[str]:
        got = httpx.get(srv.url + "/v1/serving-events", headers=AUTH).json()["events"]
        return [f"{e['event']} {e['candidate_version']}" for e in got]

    srv.start()
    try:
        traffic(srv.url, 150, seed=1)
        before = httpx.get(srv.url + "/v1/canary", headers=AUTH).json()
        assert before["version"] == "canary-1" and before["split"] == 0.2
    finally:
        srv.kill()  # no clean shutdown: nothing but the store carries the canary over
    srv.args = [a for a in srv.args if a not in canary]  # restarted without --canary
    srv.start()
    try:
        deadline = time.monotonic() + 10  # the first evaluation reads back the canary's logged traffic
        while (now := httpx.get(srv.url + "/v1/canary", headers=AUTH).json())["n_decisions"] == 0:
            assert time.monotonic() < deadline, srv.output()
            time.sleep(0.1)
        assert (now["version"], now["split"], now["candidate"]) == ("canary-1", 0.2, str(saved / "worse"))
        assert now["n_decisions"] >= before["n_decisions"]
        traffic(srv.url, 50, seed=2)
        with SQLiteDecisionStore(srv.store, readonly=True) as store:
            served = {d.policy_version for d in store.decisions()[150:]}
        assert served == {"v1", "canary-1"}  # both arms serve after the restart
        assert events() == ["canary_start canary-1"]
    finally:
        srv.stop()
    srv.args += canary  # the same canary at start-up again: kept, not restarted
    srv.start()
    try:
        assert httpx.get(srv.url + "/v1/canary", headers=AUTH).json()["version"] == "canary-1"
        assert events() == ["canary_start canary-1"]
    finally:
        srv.stop()
    srv.args[srv.args.index(str(saved / "worse"))] = str(saved / "better")  # another candidate replaces it
    srv.start()
    try:
        assert httpx.get(srv.url + "/v1/canary", headers=AUTH).json()["version"] == "canary-2"
        assert events() == ["canary_start canary-1", "canary_stop canary-1", "canary_start canary-2"]
    finally:
        srv.stop()
