"""``routing-env promote --store`` on either store (SQLite file, PostgreSQL database) with no server running:
exit codes, the swap the next server resumes, and the history; on PostgreSQL beside a running server, which
switches at its next log read."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from agents.cli import main
from agents.online import OnlineRouter, open_store
from tests.agents.online.gateway.servers import ProcessServer, free_port
from tests.agents.online.rollout import policies as P


def _traffic(router: OnlineRouter, n: int) -> None:
    rng = np.random.default_rng(7)
    for _ in range(n):
        x = rng.normal(size=2)
        d = router.route(x)
        router.feedback(
            d.decision_id, float(np.clip(P.quality(x)[0, d.action] + rng.normal(scale=0.1), 0, 1))
        )


def test_promote_on_a_store_refuses_then_promotes_and_keeps_the_history(
    store_location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    P.better().save(tmp_path / "better")
    P.worse().save(tmp_path / "worse")
    router = OnlineRouter(P.live(), store_location)
    _traffic(router, 1100)
    router.store.close()
    args = ["promote", "--store", store_location, "--candidate"]
    assert main([*args, str(tmp_path / "worse")]) == 1
    assert "refuse: the candidate is worse" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "better"), "--margin", "0.01"]) == 0
    assert "promoted: the store now serves version 'v2'" in capsys.readouterr().out
    assert main(["promote", "--store", store_location, "--history"]) == 0
    history = capsys.readouterr().out
    assert "refused (worse)" in history and "promoted to v2" in history and "--margin 0.01" in history
    resumed = OnlineRouter.restore(open_store(store_location))
    try:
        assert resumed.version == "v2"
        x = np.array([[1.0, 0.0]])
        np.testing.assert_array_equal(
            resumed.policy.action_probabilities(x), P.better().action_probabilities(x)
        )
    finally:
        resumed.store.close()


@pytest.mark.slow
def test_promote_on_postgresql_switches_a_running_server_at_its_next_log_read(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    P.live().save(tmp_path / "live")
    P.better().save(tmp_path / "better")
    router = OnlineRouter(P.live(), postgres_url)
    _traffic(router, 1100)
    router.store.close()
    port = free_port()
    # The server process must know the test policies' classes: import them before the command line runs.
    args = [
        sys.executable,
        "-c",
        P.WITH_TEST_POLICIES,
        "serve",
        "--store",
        postgres_url,
        "--policy",
        str(tmp_path / "live"),
    ]
    server = ProcessServer([*args, "--port", str(port)], port, tmp_path / "server.log").start()
    try:
        assert httpx.get(server.url + "/healthz", timeout=5).json()["policy_version"] == "v1"
        cmd = [
            "promote",
            "--store",
            postgres_url,
            "--candidate",
            str(tmp_path / "better"),
            "--margin",
            "0.01",
        ]
        assert main(cmd) == 0, capsys.readouterr().out
        deadline = time.monotonic() + 15
        while httpx.get(server.url + "/healthz", timeout=5).json()["policy_version"] != "v2":
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.05)
        r = httpx.post(server.url + "/v1/route", json={"features": [1.0, 0.0]}, timeout=5)
        assert r.status_code == 200 and r.json()["policy_version"] == "v2", r.text
    finally:
        server.stop()
