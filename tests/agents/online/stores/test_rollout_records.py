"""The rollout tables of the SQL stores: shadows, their distributions on decisions, and the gate's history."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agents.online import DecisionConflictError, OnlineRouter, SQLiteDecisionStore
from agents.online.stores.rollout import GateRecord, RolloutStore, ShadowProbabilities, ShadowRecord
from tests.agents.online.online_policies import FixedPolicy


def _router(path: Path) -> OnlineRouter:
    return OnlineRouter(FixedPolicy(("a", "b", "c"), [0.5, 0.3, 0.2]), path)


def test_the_sqlite_store_is_a_rollout_store(tmp_path: Path) -> None:
    with SQLiteDecisionStore(tmp_path / "s.db") as store:
        assert isinstance(store, RolloutStore)


def test_shadows_register_once_fail_with_their_error_and_survive_a_reopen(tmp_path: Path) -> None:
    store = SQLiteDecisionStore(tmp_path / "s.db")
    first = ShadowRecord("cand", "/policies/cand", ("a", "b"), 10.0)
    store.add_shadow(first)
    store.add_shadow(ShadowRecord("other", "/policies/other", ("b", "a"), 11.0))
    with pytest.raises(DecisionConflictError, match="'cand' is already registered"):
        store.add_shadow(ShadowRecord("cand", "/elsewhere", ("a",), 12.0))
    store.fail_shadow("other", "RuntimeError: boom")
    store.close()
    with SQLiteDecisionStore(tmp_path / "s.db") as again:
        assert again.shadows() == [
            first,
            ShadowRecord("other", "/policies/other", ("b", "a"), 11.0, "failed", "RuntimeError: boom"),
        ]
        assert again.remove_shadow("cand") is True
        assert again.remove_shadow("cand") is False
        assert [s.name for s in again.shadows()] == ["other"]


def test_shadow_traffic_joins_decisions_with_client_feedback_in_decision_order(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    store = router.store
    assert isinstance(store, RolloutStore)
    store.add_shadow(ShadowRecord("cand", "/p", ("a", "b", "c"), 1.0))
    ds = [router.route([0.0, 0.0, float(i)]) for i in range(4)]
    dists = [np.array([0.1 * i, 1 - 0.1 * i, 0.0]) for i in range(4)]
    store.insert_shadow_probabilities(
        [ShadowProbabilities("cand", d.decision_id, p) for d, p in zip(ds[::-1], dists[::-1])]
    )
    with pytest.raises(DecisionConflictError, match="already logged"):
        store.insert_shadow_probabilities([ShadowProbabilities("cand", ds[0].decision_id, dists[0])])
    router.feedback(ds[2].decision_id, 0.25, cost=0.0)
    router.feedback(ds[0].decision_id, 0.75, cost=0.5)
    # ds[1] has no feedback and ds[3] expires with a default: neither is evidence.
    closed = router.store.get_feedback(ds[0].decision_id)
    assert closed is not None
    default = dataclasses.replace(
        closed, seq=router.store.max_feedback_seq() + 1, decision_id=ds[3].decision_id, source="default"
    )
    router.store.insert_feedback(default)
    rows = store.shadow_traffic("cand")
    assert [r.decision.decision_id for r in rows] == [ds[0].decision_id, ds[2].decision_id]
    assert [r.quality for r in rows] == [0.75, 0.25]
    assert [r.cost for r in rows] == [0.5, 0.0]
    np.testing.assert_array_equal(rows[0].probabilities, dists[0])
    np.testing.assert_array_equal(rows[1].probabilities, dists[2])
    np.testing.assert_array_equal(rows[0].decision.features, ds[0].features)
    assert store.shadow_traffic("unknown") == []
    assert store.remove_shadow("cand")
    assert store.shadow_traffic("cand") == []


def test_gate_history_is_appended_in_order_with_ids(tmp_path: Path) -> None:
    store = SQLiteDecisionStore(tmp_path / "s.db")
    a = store.record_gate(
        GateRecord(0, 5.0, "/c1", "routing-env promote ...", False, "low_ess", "refuse", "{}")
    )
    b = store.record_gate(
        GateRecord(0, 6.0, "/c2", "POST /v1/promote", True, "promote", "promote", '{"n": 3}', "v2")
    )
    assert (a.id, b.id) == (1, 2)
    store.close()
    with SQLiteDecisionStore(tmp_path / "s.db", readonly=True) as again:
        assert again.gate_history() == [a, b]
        assert again.gate_history()[1].version == "v2" and again.gate_history()[1].promote is True
