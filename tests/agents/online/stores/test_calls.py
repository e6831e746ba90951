"""The upstream-calls table and fail-over re-routing of ``SQLiteDecisionStore``: logged before quality arrives,
durable across a reopen, unique per ``(decision, index)``, joining the group commit like every other write."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agents.online import Call, DecisionConflictError, OnlineRouter, SQLiteDecisionStore
from tests.agents.online.online_policies import FixedPolicy


def _call(decision_id: str, index: int, **changes: object) -> Call:
    base = Call(
        decision_id=decision_id,
        index=index,
        step=0,
        model="a",
        purpose="answer",
        created_at=1.7e9 + index,
        status="ok",
        http_status=200,
        input_tokens=120,
        output_tokens=33,
        cost=2.5e-5,
        latency_s=0.012,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _router(path: Path) -> OnlineRouter:
    return OnlineRouter(FixedPolicy(("a", "b", "c"), [0.5, 0.3, 0.2]), path)


def test_calls_round_trip_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    d = router.route([0.0, 0.0, 0.0])
    failed = _call(
        d.decision_id, 0, status="timeout", http_status=None, input_tokens=None, output_tokens=None, cost=None
    )
    verify = _call(d.decision_id, 2, purpose="verify", model="c", step=0)
    router.store.insert_calls([_call(d.decision_id, 1, model="b"), failed])
    router.store.insert_calls([verify])
    assert router.store.calls(d.decision_id) == [failed, _call(d.decision_id, 1, model="b"), verify]
    assert router.store.calls("unknown") == []
    router.store.close()
    with SQLiteDecisionStore(tmp_path / "s.db") as again:
        assert [c.index for c in again.calls(d.decision_id)] == [0, 1, 2]
        assert again.calls(d.decision_id)[0].status == "timeout"


def test_a_call_index_is_logged_once_and_a_failing_batch_writes_nothing(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    d = router.route([0.0, 0.0, 0.0])
    router.store.insert_calls([_call(d.decision_id, 0)])
    with pytest.raises(DecisionConflictError, match="already logged at that index"):
        router.store.insert_calls([_call(d.decision_id, 1), _call(d.decision_id, 0)])
    assert [c.index for c in router.store.calls(d.decision_id)] == [0]


def test_calls_join_the_group_commit(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    d = router.route([0.0, 0.0, 0.0])
    store = router.store
    store.begin_deferred()
    store.insert_calls([_call(d.decision_id, 0)])
    group = store.end_deferred()
    assert group is not None
    with SQLiteDecisionStore(tmp_path / "s.db", readonly=True) as other:
        assert other.calls(d.decision_id) == []  # not committed yet
        store.commit_group()
        assert store.group_error(group) is None
        assert len(other.calls(d.decision_id)) == 1


def test_reroute_replaces_the_served_model_of_an_open_decision_only(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    d = router.route([0.0, 0.0, 0.0])
    moved = dataclasses.replace(
        d,
        model="c",
        action=2,
        propensity=0.4,
        probabilities=np.array([0.0, 0.6, 0.4]),
        allowed_models=("b", "c"),
    )
    router.store.reroute(moved)
    got = router.store.get_decision(d.decision_id)
    assert (got.model, got.action, got.propensity, got.allowed_models) == ("c", 2, 0.4, ("b", "c"))
    np.testing.assert_array_equal(got.probabilities, [0.0, 0.6, 0.4])
    assert (got.seq, got.features.tolist(), got.status) == (d.seq, d.features.tolist(), "open")
    router.feedback(d.decision_id, 1.0, cost=0.0)
    router.store.reroute(dataclasses.replace(moved, model="a", action=0))
    assert router.store.get_decision(d.decision_id).model == "c"  # closed decisions keep what they served
