"""The gateway under load and faults, as deployed: ``routing-env gateway`` and two fake upstreams as child
processes on loopback, 16 client threads; kill -9 an upstream mid-load (requests fail over), kill -9 the gateway
and restart it (the store and the policy equal a replay)."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from agents.online import SQLiteDecisionStore
from experiments.fake_upstream import quality_of
from routing_env import LoggedDataset
from routing_env.policy import load_policy
from tests.agents.online.gateway.servers import ProcessServer, fake_process, gateway_process, model_entries
from tests.agents.online.online_policies import assert_same_state
from tests.agents.online.test_online_server import Client, replayed
from tests.agents.online.test_online_server import Traffic as ServeTraffic

TOKEN = "gateway-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GROUP_A = ("small-3b", "open-8b", "mixture-47b", "open-70b")
GROUP_B = ("mini-frontier", "frontier-large", "frontier-reasoning")


class Chat(Client):
    """The ``serve`` tests' keep-alive connection, also reading the answer's headers."""

    def post_reading_headers(
        self, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        self.conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())


class Traffic(ServeTraffic):
    """``clients`` threads sending chat completions over the sample's prompts, each then its feedback (the
    quality the answer reports; no cost: the gateway's logged cost applies)."""

    def __init__(
        self, url: str, data: LoggedDataset, clients: int, requests: int | None, feedback: bool
    ) -> None:
        super().__init__(url, data, clients, requests)
        assert data.prompts is not None
        self.prompts, self.feedback = list(data.prompts), feedback
        self.answered: dict[str, tuple[int, str]] = {}  # decision id → (row, model)

    def _run(self, worker: int) -> None:
        rng = np.random.default_rng(worker)
        chat = Chat(self.url)
        n = 0
        try:
            while not self.stop.is_set() and (self.pairs is None or n < self.pairs):
                n += 1
                row = int(rng.integers(len(self.prompts)))
                body = {"model": "router", "messages": [{"role": "user", "content": self.prompts[row]}]}
                status, headers, answer = chat.post_reading_headers("/v1/chat/completions", body)
                with self._lock:
                    self.statuses.append(status)
                if status != 200:
                    continue
                decision_id = headers["x-routing-decision-id"]
                with self._lock:
                    self.answered[decision_id] = (row, headers["x-routing-model"])
                if not self.feedback:
                    continue
                quality = quality_of(answer["choices"][0]["message"]["content"])
                status, _ = chat.post("/v1/feedback", {"decision_id": decision_id, "quality": quality})
                with self._lock:
                    self.statuses.append(status)
                    if status == 200:
                        self.acked.append(decision_id)
        except (OSError, http.client.HTTPException) as exc:  # the gateway died (the kill -9 test)
            with self._lock:
                self.errors.append(repr(exc))
        finally:
            chat.close()

    def start(self) -> Traffic:
        super().start()
        return self

    def wait_for(self, acked: int, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acked and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def deployment(
    sample: LoggedDataset, policy_dir: Path, tmp_path: Path
) -> Iterator[tuple[ProcessServer, dict[str, ProcessServer], Path]]:
    """Two fake upstream processes (models A and B) and the gateway process over them."""
    fakes = {
        g: fake_process(models, tmp_path / f"fake-{g}.log") for g, models in (("A", GROUP_A), ("B", GROUP_B))
    }
    for f in fakes.values():
        f.launch()
    urls = {m: fakes["A" if m in GROUP_A else "B"].url for m in sample.models}
    config = {
        "models": model_entries(sample, urls),
        "policy": str(policy_dir),
        "store": str(tmp_path / "gateway.db"),
        "checkpoint_every": 50,
        "cooldown_s": 30.0,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    gateway = gateway_process(path, tmp_path / "gateway.log", {"ROUTING_ENV_API_TOKEN": TOKEN})
    gateway.launch()  # the three start at once (a start is mostly imports)
    for f in fakes.values():
        f.wait(ready_path="/fake/stats")
    gateway.wait()
    yield gateway, fakes, tmp_path / "gateway.db"
    gateway.stop()
    for f in fakes.values():
        f.stop()


def _check_logged(
    store: SQLiteDecisionStore, sample: LoggedDataset, answered: dict[str, tuple[int, str]]
) -> None:
    """Every answered request is a decision of the store serving that model, with the logged cost."""
    decisions = {d.decision_id: d for d in store.decisions()}
    for decision_id, (row, model) in answered.items():
        d = decisions[decision_id]
        assert d.model == model
        ok = [c for c in store.calls(decision_id) if c.status == "ok"]
        assert len(ok) == 1 and ok[0].model == model and ok[0].cost is not None
        assert ok[0].cost == pytest.approx(sample.cost[row, sample.models.index(model)], rel=1e-12)


@pytest.mark.slow
def test_16_clients_x_500_requests_are_all_answered_and_logged_with_their_cost(
    deployment: tuple[ProcessServer, dict[str, ProcessServer], Path], sample: LoggedDataset
) -> None:
    gateway, _, db = deployment
    traffic = Traffic(gateway.url, sample, clients=16, requests=500, feedback=False).start()
    traffic.join()
    assert traffic.errors == [] and len(traffic.statuses) == 8000 and set(traffic.statuses) == {200}
    assert len(traffic.answered) == 8000
    with SQLiteDecisionStore(db, readonly=True) as store:
        _check_logged(store, sample, traffic.answered)
    assert httpx.get(gateway.url + "/healthz").json()["decisions"] == 8000


@pytest.mark.slow
def test_kill_9_an_upstream_mid_load_fails_over_and_loses_nothing_acknowledged(
    deployment: tuple[ProcessServer, dict[str, ProcessServer], Path], sample: LoggedDataset
) -> None:
    gateway, fakes, db = deployment
    traffic = Traffic(gateway.url, sample, clients=8, requests=None, feedback=True).start()
    traffic.wait_for(300)
    fakes["B"].kill()
    killed_at = len(traffic.acked)
    traffic.wait_for(killed_at + 400)
    traffic.stop.set()
    traffic.join()
    assert traffic.errors == [] and set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
    assert len(traffic.acked) >= killed_at + 400
    with SQLiteDecisionStore(db, readonly=True) as store:
        _check_logged(store, sample, traffic.answered)
        assert set(traffic.acked) <= {fb.decision_id for fb, _ in store.feedback()}
        failed = [c for d in store.decisions() for c in store.calls(d.decision_id) if c.status != "ok"]
        assert (
            failed and {c.model for c in failed} <= set(GROUP_B) and {c.status for c in failed} == {"error"}
        )
        served_after = [traffic.answered[i][1] for i in traffic.acked[killed_at + 100 :]]
        assert set(served_after) <= set(GROUP_A)  # B's models are cooling down
        for fb, d in store.feedback():
            assert fb.cost == pytest.approx(sum(c.cost or 0 for c in store.calls(d.decision_id)), rel=1e-12)
    assert "routing_env_gateway_fail_overs_total" in httpx.get(gateway.url + "/metrics").text


@pytest.mark.slow
def test_kill_9_the_gateway_and_restart_the_store_and_policy_equal_a_replay(
    deployment: tuple[ProcessServer, dict[str, ProcessServer], Path],
    sample: LoggedDataset,
    policy_dir: Path,
    tmp_path: Path,
) -> None:
    gateway, _, db = deployment
    traffic = Traffic(gateway.url, sample, clients=4, requests=None, feedback=True).start()
    traffic.wait_for(400)
    gateway.kill()
    traffic.stop.set()
    traffic.join()
    acked, answered = set(traffic.acked), dict(traffic.answered)
    assert len(acked) >= 400 and set(traffic.statuses) == {200}
    gateway.start()  # the same command on the same store: the last checkpoint plus the feedback after it
    with SQLiteDecisionStore(db, readonly=True) as store:
        assert acked <= {fb.decision_id for fb, _ in store.feedback()}
        _check_logged(store, sample, answered)
        checkpoint = httpx.post(gateway.url + "/v1/checkpoint", headers=AUTH, timeout=30).json()["path"]
        live = load_policy(shutil.copytree(checkpoint, tmp_path / "live"))
        assert_same_state(live, replayed(policy_dir, store), tmp_path)
    # Still serving after the restart.
    body = {"model": "router", "messages": [{"role": "user", "content": str(sample.prompts[0])}]}  # type: ignore[index]
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
