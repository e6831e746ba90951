"""The decision-store contract, run against every store (a SQLite file and a real PostgreSQL database).

One tester for all backends: records round-trip exactly, feedback is exactly-once and read back in log order,
writes survive a restart and a kill -9 of the writer, checkpoints hold the policy and the log position they
include, group commit defers and refuses as the protocol says, errors are the documented ones, and the same traffic
exports to the same dataset from either store.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.online import (
    DecisionConflictError,
    DecisionNotFoundError,
    OnlineRouter,
    open_store,
)
from agents.online.errors import LogConflictError
from agents.online.stores.base import Decision, DecisionStore, Step
from routing_env.errors import ConfigurationError
from routing_env.policy import load_policy
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade, assert_same_state
from tests.agents.online.stores.records import MODELS, VERSION, decision, feedback, register

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def store(location: str) -> Any:
    s = open_store(location)
    register(s)
    yield s
    s.close()


def same_decision(a: Decision, b: Decision, **changes: Any) -> None:
    """``a`` equals ``b`` (arrays bit for bit) except for the fields in ``changes``, which ``a`` must have."""
    for f in dataclasses.fields(Decision):
        left, right = getattr(a, f.name), changes.get(f.name, getattr(b, f.name))
        if isinstance(right, np.ndarray):
            assert left.dtype == right.dtype and left.tobytes() == right.tobytes(), f.name
        else:
            assert left == right, f.name


# ---------------------------------------------------------------------------------------------------- records
def test_policy_versions_keep_their_order_and_never_change(store: DecisionStore) -> None:
    store.record_policy("v2", "tests.Other", ("x", "y"), None, 1_600_000_001.0)
    store.record_policy(VERSION, "tests.FixedPolicy", MODELS, 4, 1_600_000_000.0)  # the same again: no-op
    versions = store.policy_versions()
    assert list(versions) == [VERSION, "v2"]
    assert versions["v2"].models == ("x", "y") and versions["v2"].n_features is None
    assert versions[VERSION].kind == "tests.FixedPolicy" and versions[VERSION].n_features == 4
    with pytest.raises(ConfigurationError, match=r"already recorded .* give the new policy a new version id"):
        store.record_policy("v2", "tests.Other", ("x", "z"), None, 0.0)


def test_decisions_round_trip_exactly(store: DecisionStore) -> None:
    logged = [decision(seq, request_id=f"req-{seq}" if seq % 2 else None) for seq in range(1, 8)]
    for d in logged:
        store.insert_decision(d)
    for d in logged:
        same_decision(store.get_decision(d.decision_id), d)
    same_decision(store.find_request("req-3"), logged[2])
    assert store.find_request("req-2") is None
    assert [d.decision_id for d in store.decisions()] == [d.decision_id for d in logged]
    assert store.max_decision_seq() == 7
    assert store.open_before(logged[3].created_at) == [d.decision_id for d in logged[:3]]
    with pytest.raises(DecisionNotFoundError, match="unknown decision_id 'nope'"):
        store.get_decision("nope")


def test_a_repeated_request_id_is_a_conflict_and_the_first_decision_stays(store: DecisionStore) -> None:
    first = decision(1, request_id="retry-me")
    store.insert_decision(first)
    with pytest.raises(DecisionConflictError, match="request_id 'retry-me' already has a decision"):
        store.insert_decision(decision(2, request_id="retry-me"))
    same_decision(store.find_request("retry-me"), first)
    assert store.max_decision_seq() == 1


def test_cascade_steps_update_their_decision_atomically(store: DecisionStore) -> None:
    d = decision(1, kind="cascade")
    store.insert_decision(d)
    s0 = Step(d.decision_id, 0, d.created_at + 0.1, 0.2, 1e-5, False, 0.7, False)
    s1 = Step(d.decision_id, 1, d.created_at + 0.2, 0.9, None, True, 0.6, True)
    store.insert_step(s0, 2, MODELS[1], 1)
    store.insert_step(s1, 2, MODELS[1], 1)
    assert store.steps(d.decision_id) == [s0, s1]
    same_decision(store.get_decision(d.decision_id), d, n_calls=2, model=MODELS[1], action=1)


# ---------------------------------------------------------------------------------------------------- feedback
def test_feedback_closes_its_decision_exactly_once(store: DecisionStore) -> None:
    a, b = decision(1), decision(2)
    store.insert_decision(a)
    store.insert_decision(b)
    first = feedback(a, 1, quality=0.9)
    assert store.insert_feedback(first) == 1
    with pytest.raises(DecisionConflictError, match="already has feedback; feedback is accepted once"):
        store.insert_feedback(feedback(a, 2, quality=0.1))
    assert store.get_feedback(a.decision_id) == first
    assert store.log_position() == 1 and store.max_feedback_seq() == 1
    assert store.insert_feedback(feedback(b, 2, source="default")) == 2
    assert store.get_decision(a.decision_id).status == "closed"
    assert store.get_decision(b.decision_id).status == "expired"
    assert store.decisions("open") == []
    store.insert_decision(c := decision(3))
    store.mark_expired(c.decision_id)
    assert store.get_decision(c.decision_id).status == "expired" and store.get_feedback(c.decision_id) is None
    counts = store.counts()
    assert (counts.decisions, counts.pending, counts.feedback) == (3, 0, {"client": 1, "default": 1})


def test_feedback_is_read_back_in_log_order(store: DecisionStore) -> None:
    logged = [decision(seq) for seq in range(1, 13)]
    for d in logged:
        store.insert_decision(d)
    order = [logged[i] for i in (4, 0, 11, 7, 3, 1, 2, 10, 5, 6, 9, 8)]  # feedback arrives out of order
    expected = [feedback(d, pos) for pos, d in enumerate(order, start=1)]
    for fb in expected:
        assert store.insert_feedback(fb) == fb.seq
    replayed = list(store.feedback(after_seq=3))
    assert [fb for fb, _ in replayed] == expected[3:]
    for (_, d), want in zip(replayed, order[3:]):
        same_decision(d, want, status="closed")
    entries = store.log_entries(after=5, limit=4)
    assert [e.position for e in entries] == [6, 7, 8, 9]
    assert all(e.kind == "feedback" and e.feedback == expected[e.position - 1] for e in entries)
    assert store.log_entries(after=12) == [] and store.log_position() == 12


def test_wait_for_log_wakes_when_another_store_appends(location: str, store: DecisionStore) -> None:
    d = decision(1)
    store.insert_decision(d)
    watcher = open_store(location, readonly=True)  # another process's view of the same log
    t0 = time.monotonic()
    assert watcher.wait_for_log(0, timeout_s=0.3) == 0
    assert 0.25 < time.monotonic() - t0 < 5

    def append() -> None:
        time.sleep(0.3)
        store.insert_feedback(feedback(d, 1))

    thread = threading.Thread(target=append)
    thread.start()
    t0 = time.monotonic()
    assert watcher.wait_for_log(0, timeout_s=30) == 1
    assert time.monotonic() - t0 < 10
    thread.join()
    assert watcher.wait_for_log(0, timeout_s=0) == 1  # already past: returns at once
    watcher.close()


# ---------------------------------------------------------------------------------------------------- durability
def test_everything_survives_closing_and_reopening(location: str) -> None:
    s = open_store(location)
    register(s)
    logged = [decision(seq, request_id=f"r{seq}") for seq in range(1, 6)]
    for d in logged:
        s.insert_decision(d)
    written = [feedback(d, pos) for pos, d in enumerate(logged[:3], start=1)]
    for fb in written:
        s.insert_feedback(fb)
    before = s.counts()
    s.close()
    with pytest.raises(ConfigurationError, match="is closed"):
        s.get_decision(logged[0].decision_id)
    again = open_store(location)
    assert again.counts() == before
    assert [fb for fb, _ in again.feedback()] == written
    same_decision(again.get_decision(logged[4].decision_id), logged[4])
    assert again.policy_versions()[VERSION].models == MODELS
    again.close()


def test_acknowledged_writes_survive_kill_9_of_the_writer(location: str) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.agents.online.stores.records", "ack", location, "100000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = 0
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked = int(line.split()[1])
            if acked >= 40:
                break
    finally:
        writer.kill()  # SIGKILL: no chance to flush or close anything
        writer.wait(30)
    assert acked >= 40
    s = open_store(location)
    assert s.max_feedback_seq() >= acked
    assert [fb.seq for fb, _ in s.feedback()] == list(range(1, s.max_feedback_seq() + 1))
    for seq in range(1, acked + 1):
        assert s.get_feedback(decision(seq).decision_id) == feedback(decision(seq), seq)
    s.close()


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_hold_the_policy_and_the_log_position_it_includes(location: str, tmp_path: Path) -> None:
    s = open_store(location, keep_checkpoints=2)
    register(s)
    assert s.latest_checkpoint() is None
    policies = []
    for n in range(1, 4):
        d = decision(n)
        s.insert_decision(d)
        s.insert_feedback(feedback(d, n))
        policy = FixedPolicy(MODELS, [0.2, 0.3, 0.5], n_features=4)
        policy.updates = [(k % 3, k / 10) for k in range(n)]
        path = s.checkpoint_path(VERSION, n)
        policy.save(path)
        ckpt = s.add_checkpoint(VERSION, path, n)
        assert (ckpt.policy_version, ckpt.last_feedback_seq) == (VERSION, n)
        policies.append(policy)
    latest = s.latest_checkpoint()
    assert latest is not None and latest.last_feedback_seq == 3
    assert load_policy(latest.path).updates == policies[-1].updates
    s.close()
    again = open_store(location)  # a new process: the checkpoint comes back from the store alone
    latest = again.latest_checkpoint()
    assert latest is not None and latest.last_feedback_seq == 3
    assert_same_state(load_policy(latest.path), policies[-1], tmp_path)
    again.close()


def test_a_swap_is_a_log_entry_whose_checkpoint_outlives_pruning(location: str, tmp_path: Path) -> None:
    s = open_store(location, keep_checkpoints=1)
    register(s)
    s.record_policy("v2", "tests.FixedPolicy", MODELS, 4, 1_600_000_001.0)
    logged = [decision(n) for n in range(1, 6)]
    for d in logged:
        s.insert_decision(d)
    for n in (1, 2):
        s.insert_feedback(feedback(logged[n - 1], n))
    swapped = FixedPolicy(MODELS, [0.6, 0.3, 0.1], n_features=4)
    positions = []

    def save(position: int) -> Path:
        positions.append(position)
        path = s.checkpoint_path("v2", position)
        swapped.save(path)
        return path

    ckpt = s.append_swap("v2", save)
    assert positions == [3] and (ckpt.policy_version, ckpt.last_feedback_seq) == ("v2", 3)
    assert s.log_position() == 3 and s.max_feedback_seq() == 2
    assert s.insert_feedback(feedback(logged[2], 0)) == 4  # seq 0: after the swap
    with pytest.raises(LogConflictError, match="position 3"):
        s.insert_feedback(feedback(logged[3], 3))  # the swap's position is taken
    s.insert_feedback(feedback(logged[3], 5))
    for _ in range(2):  # newer checkpoints prune older ones, never the swap's
        path = s.checkpoint_path("v2", 5)
        FixedPolicy(MODELS, [0.1, 0.1, 0.8], n_features=4).save(path)
        s.add_checkpoint("v2", path, 5)
    s.close()
    again = open_store(location)  # a new process reads the swap and its policy from the store alone
    entries = again.log_entries(after=1)
    assert [(e.position, e.kind) for e in entries] == [
        (2, "feedback"),
        (3, "swap"),
        (4, "feedback"),
        (5, "feedback"),
    ]
    swap = entries[1]
    assert swap.feedback is None and swap.decision is None and swap.checkpoint is not None
    assert (swap.checkpoint.policy_version, swap.checkpoint.last_feedback_seq) == ("v2", 3)
    assert_same_state(load_policy(swap.checkpoint.path), swapped, tmp_path)
    assert [fb.seq for fb, _ in again.feedback()] == [1, 2, 4, 5]  # feedback alone, swaps left out
    assert [e.position for e in again.log_entries(after=0, limit=3)] == [1, 2, 3]
    assert again.log_position() == 5
    again.close()


def test_a_restart_replays_the_swaps_in_the_log(location: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    router = OnlineRouter(LearningThresholdCascade(MODELS, n_features=4), open_store(location), seed=2)
    versions = []
    for step in range(3):
        for _ in range(8):
            d = router.route(rng.normal(size=4).tolist())
            while router.observe(d.decision_id, float(rng.random())).action == "call":
                pass
            router.feedback(d.decision_id, float(rng.random()), cost=1e-4)
        if step < 2:
            versions.append(
                router.swap_policy(LearningThresholdCascade(MODELS, n_features=4, lr=0.2 + 0.1 * step))
            )
    assert versions == ["v2", "v3"] and router.stats()["last_feedback_seq"] == 26
    kinds = [e.kind for e in router.store.log_entries(limit=100)]
    assert kinds.count("swap") == 2 and kinds[8] == kinds[17] == "swap"
    router.store.close()
    restored = OnlineRouter.restore(open_store(location), seed=2)
    assert restored.version == "v3" and restored.stats()["last_feedback_seq"] == 26
    assert_same_state(router.policy, restored.policy, tmp_path)
    restored.store.close()


def test_the_router_restores_bit_identically_from_either_store(location: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cascade = LearningThresholdCascade(MODELS, n_features=4)
    router = OnlineRouter(cascade, open_store(location), checkpoint_every=7, seed=5)
    for _ in range(30):
        d = router.route(rng.normal(size=4).tolist())
        while router.observe(d.decision_id, float(rng.random())).action == "call":
            pass
        router.feedback(d.decision_id, float(rng.random()), cost=1e-4)
    router.store.close()  # one writer at a time: the restart comes after
    restored = OnlineRouter.restore(open_store(location), checkpoint_every=7, seed=5)
    assert_same_state(router.policy, restored.policy, tmp_path)
    assert restored.stats()["last_feedback_seq"] == 30
    restored.store.close()


def test_a_retried_request_id_gets_the_first_decision(location: str) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.2, 0.3, 0.5], n_features=4), open_store(location))
    first = router.route([0.1, 0.2, 0.3, 0.4], request_id="req-1")
    again = router.route([9.0, 9.0, 9.0, 9.0], request_id="req-1")
    same_decision(again, first)
    router.store.close()
    restarted = OnlineRouter.restore(open_store(location))  # after a restart too, from the store
    same_decision(restarted.route([0.0] * 4, request_id="req-1"), first)
    assert restarted.store.max_decision_seq() == 1
    restarted.store.close()


# ---------------------------------------------------------------------------------------------------- group commit
def test_group_commit_defers_writes_until_it_commits(location: str, store: DecisionStore) -> None:
    reader = open_store(location, readonly=True)
    store.begin_deferred()
    store.insert_decision(decision(1))
    store.insert_decision(decision(2))
    group = store.end_deferred()
    assert group is not None
    assert reader.max_decision_seq() == 0  # not committed yet
    done = threading.Event()

    def write() -> None:  # another thread's write waits for the group, then commits after it
        store.insert_decision(decision(3))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.3)
    store.commit_group()
    assert store.group_error(group) is None
    thread.join(10)
    assert done.is_set() and reader.max_decision_seq() == 3
    store.begin_deferred()
    store.insert_decision(decision(4))
    store.end_deferred()
    store.mark_expired(decision(1).decision_id)  # a write outside the deferral commits the group first
    assert reader.max_decision_seq() == 4
    store.commit_group()  # nothing open: a no-op
    # Deferral belongs to the thread that asked for it: another thread's write meanwhile commits on its own.
    store.begin_deferred()
    thread = threading.Thread(target=store.insert_decision, args=(decision(5),))
    thread.start()
    thread.join(10)
    assert reader.max_decision_seq() == 5 and store.end_deferred() is None
    reader.close()


def test_a_refused_write_leaves_its_group_intact(location: str, store: DecisionStore) -> None:
    for seq in (1, 2, 3):
        store.insert_decision(decision(seq))
    store.insert_feedback(feedback(decision(1), 1))
    store.begin_deferred()
    store.insert_feedback(feedback(decision(2), 2))
    with pytest.raises(DecisionConflictError):
        store.insert_feedback(feedback(decision(1), 3))  # a second feedback, inside the group
    with pytest.raises(DecisionConflictError):
        store.insert_decision(decision(1))
    store.insert_feedback(feedback(decision(3), 3))
    group = store.end_deferred()
    assert group is not None
    store.commit_group()
    assert store.group_error(group) is None
    reader = open_store(location, readonly=True)
    assert [fb.decision_id for fb, _ in reader.feedback()] == [decision(n).decision_id for n in (1, 2, 3)]
    reader.close()


def test_a_refusal_alone_in_a_group_holds_nothing_open(location: str, store: DecisionStore) -> None:
    store.insert_decision(decision(1))
    store.insert_feedback(feedback(decision(1), 1))
    store.begin_deferred()
    with pytest.raises(DecisionConflictError):
        store.insert_feedback(feedback(decision(1), 2))
    assert store.end_deferred() is None  # nothing to wait for, and nobody will commit…
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store.insert_decision(decision(2)), done.set()), daemon=True)
    thread.start()
    try:
        assert done.wait(10)  # …so the refusal kept nothing locked
    finally:
        store.commit_group()  # let the thread finish whatever happened
        thread.join(10)
    reader = open_store(location, readonly=True)
    assert reader.max_decision_seq() == 2
    reader.close()


# ---------------------------------------------------------------------------------------------------- export
def _serve_traffic(store: DecisionStore) -> OnlineRouter:
    rng = np.random.default_rng(11)
    router = OnlineRouter(FixedPolicy(MODELS, [0.2, 0.3, 0.5], n_features=4), store, checkpoint_every=10)
    for n in range(40):
        d = router.route(rng.normal(size=4).tolist(), allowed_models=MODELS[:2] if n % 5 == 0 else None)
        if n % 7 != 3:
            router.feedback(d.decision_id, float(rng.random()), cost=1e-4, latency_s=0.2)
    return router


def test_the_same_traffic_exports_the_same_dataset_from_either_store(
    postgres_url: str, tmp_path: Path
) -> None:
    exports, counts = [], []
    for location in (str(tmp_path / "s.db"), postgres_url):
        router = _serve_traffic(open_store(location))
        ds = router.store.export()
        exports.append((ds.to_frame(), ds.logged_action, ds.propensity, ds.models, dict(ds.meta)))
        counts.append(router.store.counts())
        router.store.close()
    (frame_a, act_a, prop_a, models_a, meta_a), (frame_b, act_b, prop_b, models_b, meta_b) = exports
    assert models_a == models_b and len(frame_a) == 34
    assert frame_a.drop(columns="query_id").equals(frame_b.drop(columns="query_id"))
    assert np.array_equal(act_a, act_b) and np.array_equal(prop_a, prop_b)
    assert meta_a.pop("source") != meta_b.pop("source") and meta_a == meta_b
    assert counts[0] == counts[1]


def test_export_errors_name_the_problem(store: DecisionStore) -> None:
    with pytest.raises(ConfigurationError, match=r"nothing to export .* no routed decision has feedback"):
        store.export()
    with pytest.raises(ConfigurationError, match=r"versions \['v9'\] were never served"):
        store.export(versions=["v9"])


# ---------------------------------------------------------------------------------------------------- the service
def test_the_http_service_commits_every_acknowledged_write_in_groups(location: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import asyncio

    from agents.online import create_app
    from agents.routers import LinUCB
    from tests.agents.online.test_group_commit import _concurrently

    rng = np.random.default_rng(0)
    policy = LinUCB(alpha=0.5, epsilon=0.1, models=list(MODELS), seed=0)
    router = OnlineRouter(policy, open_store(location), checkpoint_every=25)
    app = create_app(router)
    reader = open_store(location, readonly=True)

    async def scenario() -> None:
        routed = await _concurrently(
            app, "/v1/route", [{"features": rng.normal(size=4).tolist()} for _ in range(48)]
        )
        assert [status for status, _ in routed] == [200] * 48
        ids = [body["decision_id"] for _, body in routed]
        assert {d.decision_id for d in reader.decisions()} == set(ids)  # acknowledged = committed
        fed = await _concurrently(
            app, "/v1/feedback", [{"decision_id": d, "quality": 0.7, "cost": 1e-4} for d in ids + ids[:4]]
        )
        assert [status for status, _ in fed] == [200] * 48 + [409] * 4
        assert reader.log_position() == 48

    asyncio.run(scenario())
    assert router.n_applied == 48
    router.store.close()
    reader.close()
    restored = OnlineRouter.restore(open_store(location), checkpoint_every=25)
    assert_same_state(router.policy, restored.policy, tmp_path)
    restored.store.close()
