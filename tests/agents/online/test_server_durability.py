"""The real service across restarts and under load: a reward-learning policy that survives kill -9, a restart
from another working directory that resumes learning, missing checkpoints and lost write-ahead logs refused, a
write-ahead log bounded under load, a read-only store refused at start, and prompt routing with ``--featurizer``."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agents.online import SQLiteDecisionStore
from agents.routers import LinUCB
from routing_env.data import LoggedDataset, TextFeaturizer, make_synthetic
from routing_env.policy import load_policy
from tests.agents.online.online_policies import assert_same_state
from tests.agents.online.serving import AUTH, Client, Server, in_threads

pytest.importorskip("uvicorn")

MIB = 1 << 20


def _pairs(url: str, data: LoggedDataset, rows: range) -> list[str]:
    """Route + feedback for ``rows``; the acknowledged decision ids."""
    acked = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in rows:
            d = c.post("/v1/route", json={"features": data.features[i].tolist()}).json()
            a = int(d["action"])
            r = c.post(
                "/v1/feedback",
                json={
                    "decision_id": d["decision_id"],
                    "quality": float(data.quality[i, a]),
                    "cost": float(data.cost[i, a]),
                },
            )
            assert r.status_code == 200, r.text
            acked.append(d["decision_id"])
    return acked


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def _replayed(policy_dir: Path, store: Path, outcomes: bool = True) -> object:
    """The policy in ``policy_dir`` with every applied feedback of ``store`` replayed (as the router learns it)."""
    policy = load_policy(policy_dir)
    policy.action_probabilities(np.zeros((1, policy.n_features), dtype=np.float32))
    reader = SQLiteDecisionStore(store, readonly=True)
    for fb, d in reader.feedback():
        if not fb.applied:
            continue
        a = np.array([d.action])
        if outcomes:
            policy.update_outcomes(d.features[None, :], a, np.array([fb.quality]), np.array([fb.cost]))
        else:
            policy.update(d.features[None, :], a, np.array([fb.reward]))
    reader.close()
    return policy


def _served(url: str) -> object:
    return load_policy(httpx.post(url + "/v1/checkpoint", headers=AUTH, timeout=30).json()["path"])


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts, stopped at its end whatever happens."""
    started: list[Server] = []
    yield started
    for srv in started:
        srv.stop()


# ---------------------------------------------------------------------------------------------------- reward mode
@pytest.mark.slow
def test_a_reward_learning_policy_learns_and_survives_kill_9(
    data: LoggedDataset, tmp_path: Path, servers: list[Server]
) -> None:
    policy = LinUCB(models=list(data.models), epsilon=0.1, seed=0)
    policy.fit_rewards(data.features[:300], data.rewards(cost_weight=0.5)[:300])
    saved = policy.save(tmp_path / "reward-linucb")
    srv = Server(tmp_path / "store.db", saved, "--cost-weight", "0.5", "--checkpoint-every", "1000")
    servers.append(srv)
    srv.start()
    _pairs(srv.url, data, range(300, 350))  # every feedback 200 (was: 422, then 500, then 409)
    assert _metric(srv.url, "routing_env_policy_updates_total") == 50
    srv.kill()
    srv.start()  # was: the server would not start again
    assert "replayed 50 feedback" in srv.output()
    assert _metric(srv.url, "routing_env_policy_updates_total") == 0  # replays are not updates received
    assert _metric(srv.url, "routing_env_policy_replays_total") == 50
    _pairs(srv.url, data, range(350, 360))
    assert_same_state(_served(srv.url), _replayed(saved, srv.store, outcomes=False), tmp_path)


# ---------------------------------------------------------------------------------------------------- restarts
@pytest.mark.slow
def test_restart_from_another_directory_resumes_and_losses_are_refused(
    data: LoggedDataset, policy_dir: Path, tmp_path: Path, servers: list[Server]
) -> None:
    run = tmp_path / "run"
    (run / "dbs").mkdir(parents=True)
    first = Server(
        Path("dbs/dur.db"), policy_dir, "--checkpoint-every", "20", cwd=run, log=tmp_path / "1.log"
    )
    servers.append(first)
    first.start()
    acked = _pairs(first.url, data, range(600, 670))
    first.kill()
    # The same store from its own directory, without --policy: it must resume, not start over.
    second = Server(Path("dur.db"), None, cwd=run / "dbs", log=tmp_path / "2.log")
    servers.append(second)
    second.start()
    log = second.output()
    assert "restored version 'v1' from checkpoint" in log and "dur.db.checkpoints" in log
    assert "(feedback up to seq 60) and replayed 10 feedback" in log
    assert_same_state(_served(second.url), _replayed(policy_dir, first.store), tmp_path)
    second.stop()
    store = SQLiteDecisionStore(first.store, readonly=True)
    assert {fb.decision_id for fb, _ in store.feedback()} == set(acked)
    store.close()
    # Its checkpoints moved away: refused, naming what would be lost (was: silently restarted from --policy).
    shutil.move(run / "dbs" / "dur.db.checkpoints", tmp_path / "moved")
    code, out = Server(Path("dur.db"), policy_dir, cwd=run / "dbs", log=tmp_path / "3.log").run_to_exit()
    assert code == 2 and "which does not exist" in out and "70 applied feedback" in out
    shutil.move(tmp_path / "moved", run / "dbs" / "dur.db.checkpoints")


@pytest.mark.slow
def test_a_lost_write_ahead_log_is_refused_at_start(
    data: LoggedDataset, policy_dir: Path, tmp_path: Path, servers: list[Server]
) -> None:
    srv = Server(tmp_path / "store.db", policy_dir)
    servers.append(srv)
    srv.start()
    _pairs(srv.url, data, range(700, 710))
    # A reader holding an old snapshot keeps the server's checkpoints from copying what follows into the
    # database, so the write-ahead log is the only copy of it when the server dies.
    reader = sqlite3.connect(f"file:{srv.store}?mode=ro", uri=True)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM decisions").fetchone()
    _pairs(srv.url, data, range(710, 760))
    srv.kill()
    Path(str(srv.store) + "-wal").unlink()
    reader.close()
    code, out = Server(tmp_path / "store.db", policy_dir, log=tmp_path / "again.log").run_to_exit()
    assert code == 2, out
    assert "but its last writer had committed decisions up to seq 60" in out and "write-ahead log" in out


@pytest.mark.slow
def test_the_write_ahead_log_stays_bounded_under_load(
    data: LoggedDataset, policy_dir: Path, tmp_path: Path, servers: list[Server]
) -> None:
    srv = Server(tmp_path / "store.db", policy_dir, "--wal-max-mb", "1")
    servers.append(srv)
    srv.start()
    wal = Path(str(srv.store) + "-wal")
    largest = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if wal.exists():
                largest[0] = max(largest[0], wal.stat().st_size)
            time.sleep(0.01)

    statuses: list[int] = []

    def clients(worker: int) -> None:
        client = Client(srv.url)
        rng = np.random.default_rng(worker)
        try:
            for _ in range(400):
                i = int(rng.integers(data.n_queries))
                status, d = client.post("/v1/route", {"features": data.features[i].tolist()})
                statuses.append(status)
                status, _ = client.post("/v1/feedback", {"decision_id": d["decision_id"], "quality": 0.5})
                statuses.append(status)
        finally:
            client.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    in_threads(16, clients)
    done.set()
    watcher.join()
    assert len(statuses) == 12_800 and set(statuses) == {200}
    assert largest[0] <= 4 * MIB, (
        f"the write-ahead log reached {largest[0]} bytes (bound: 1 MiB + one commit)"
    )


def test_a_read_only_store_is_refused_at_start(policy_dir: Path, tmp_path: Path) -> None:
    if not shutil.which("unshare") or subprocess.run(["unshare", "--mount", "true"], check=False).returncode:
        pytest.skip("needs unshare --mount (root or user namespaces) to mount a read-only file system")
    ro = tmp_path / "ro"
    ro.mkdir()
    SQLiteDecisionStore(ro / "store.db").close()  # an existing store, then the file system turns read-only
    mount = ["unshare", "--mount", "sh", "-c",
             f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec \"$@\"", "sh"]  # fmt: skip
    code, out = Server(ro / "store.db", policy_dir, log=tmp_path / "ro.log").run_to_exit(prefix=mount)
    assert code == 2, out
    assert "routing-env serve: error: cannot open the store" in out and "read-only" in out.lower()


# ---------------------------------------------------------------------------------------------------- prompts
@pytest.mark.slow
def test_prompt_routing_with_a_featurizer_and_contract_checked_swaps(
    tmp_path: Path, servers: list[Server]
) -> None:
    ds = make_synthetic(n_queries=300, models=4, n_features=4, seed=3)
    assert ds.prompts is not None
    feat = TextFeaturizer(n_components=8, hash_bits=12, max_buckets=512, seed=0).fit(list(ds.prompts))
    featurized = ds.with_features(feat.transform(list(ds.prompts)))
    bare = (
        LinUCB(epsilon=0.1, seed=0).fit(featurized, cost_weight=0.5).save(tmp_path / "bare")
    )  # no featurizer
    feat_dir = feat.save(tmp_path / "featurizer")
    srv = Server(tmp_path / "store.db", bare, "--featurizer", str(feat_dir), "--policy-root", str(tmp_path))
    servers.append(srv)
    srv.start()
    prompt = str(ds.prompts[0])
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        d = c.post("/v1/route", json={"prompt": prompt})
        assert d.status_code == 200, d.text
    srv.kill()
    srv.args = [a for a in srv.args if a not in ("--featurizer", str(feat_dir))]
    srv.start()  # no --featurizer: the checkpoint kept it
    with httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as c:
        again = c.post("/v1/route", json={"prompt": prompt})
        assert again.status_code == 200 and again.json()["probabilities"] == d.json()["probabilities"]
        # A policy on raw features (width 4, no featurizer) would break every prompt request: refused.
        raw = LinUCB(epsilon=0.1, seed=0).fit(ds, cost_weight=0.5).save(tmp_path / "raw")
        r = c.post("/v1/policy", json={"path": str(raw), "version": "raw"})
        assert (
            r.status_code == 409
            and "feature width 8 → 4" in r.json()["detail"]
            and "force" in r.json()["detail"]
        )
        assert c.post("/v1/route", json={"prompt": prompt}).status_code == 200
        r = c.post("/v1/policy", json={"path": str(raw), "version": "raw", "force": True})
        assert r.status_code == 200 and r.json()["version"] == "raw"
