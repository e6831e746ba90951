"""The rollout tables, run against every store (a SQLite file and a real PostgreSQL database): shadows, their
distributions on decisions, the gate's history and the serving mix's events."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from agents.online import DecisionConflictError, OnlineRouter, open_store
from agents.online.stores.rollout import (
    GateRecord,
    RolloutStore,
    ServingEvent,
    ShadowProbabilities,
    ShadowRecord,
)
from tests.agents.online.online_policies import FixedPolicy


def _rollout(location: str) -> Any:
    store = open_store(location)
    assert isinstance(store, RolloutStore)
    return store


def test_shadows_register_once_fail_with_their_error_and_survive_a_reopen(location: str) -> None:
    store = _rollout(location)
    first = ShadowRecord("cand", "/policies/cand", ("a", "b"), 10.0)
    store.add_shadow(first)
    store.add_shadow(ShadowRecord("other", "/policies/other", ("b", "a"), 11.0))
    with pytest.raises(DecisionConflictError, match="'cand' is already registered"):
        store.add_shadow(ShadowRecord("cand", "/elsewhere", ("a",), 12.0))
    store.fail_shadow("other", "RuntimeError: boom")
    store.close()
    again = _rollout(location)
    try:
        assert again.shadows() == [
            first,
            ShadowRecord("other", "/policies/other", ("b", "a"), 11.0, "failed", "RuntimeError: boom"),
        ]
        assert again.remove_shadow("cand") is True
        assert again.remove_shadow("cand") is False
        assert [s.name for s in again.shadows()] == ["other"]
    finally:
        again.close()


def test_shadow_traffic_joins_decisions_with_client_feedback_in_decision_order(location: str) -> None:
    router = OnlineRouter(FixedPolicy(("a", "b", "c"), [0.5, 0.3, 0.2]), location)
    store = router.store
    try:
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
        # ds[1] has no feedback and ds[3] is closed by a default: neither is evidence.
        closed = store.get_feedback(ds[0].decision_id)
        assert closed is not None
        default = dataclasses.replace(
            closed, seq=store.max_feedback_seq() + 1, decision_id=ds[3].decision_id, source="default"
        )
        store.insert_feedback(default)
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
    finally:
        store.close()


def test_a_distribution_is_stored_only_while_the_registration_it_was_computed_for_stands(
    location: str,
) -> None:
    router = OnlineRouter(FixedPolicy(("a", "b", "c"), [0.5, 0.3, 0.2]), location)
    store = router.store
    try:
        assert isinstance(store, RolloutStore)
        store.add_shadow(ShadowRecord("cand", "/p", ("a", "b", "c"), 1.0))
        ds = [router.route([0.0, 0.0, float(i)]) for i in range(4)]
        for d in ds:
            router.feedback(d.decision_id, 0.5, cost=0.0)
        p = np.array([0.2, 0.3, 0.5])
        store.insert_shadow_probabilities([ShadowProbabilities("cand", ds[0].decision_id, p, 1.0)])
        # computed for an older registration of the name (a replica that has not seen the replacement yet)
        store.insert_shadow_probabilities([ShadowProbabilities("cand", ds[1].decision_id, p, 0.5)])
        store.insert_shadow_probabilities([ShadowProbabilities("gone", ds[2].decision_id, p, 1.0)])  # removed
        store.insert_shadow_probabilities([ShadowProbabilities("canary:canary-1", ds[3].decision_id, p)])
        assert [r.decision.decision_id for r in store.shadow_traffic("cand")] == [ds[0].decision_id]
        assert store.shadow_traffic("gone") == []
        assert [r.decision.decision_id for r in store.shadow_traffic("canary:canary-1")] == [
            ds[3].decision_id
        ]
        store.fail_shadow("cand", "RuntimeError: boom")  # failed elsewhere: no more rows
        store.insert_shadow_probabilities([ShadowProbabilities("cand", ds[2].decision_id, p, 1.0)])
        assert len(store.shadow_traffic("cand")) == 1
    finally:
        store.close()


def test_gate_history_and_serving_events_are_appended_in_order_with_ids(location: str) -> None:
    store = _rollout(location)
    a = store.record_gate(
        GateRecord(0, 5.0, "/c1", "routing-env promote ...", False, "low_ess", "refuse", "{}")
    )
    b = store.record_gate(
        GateRecord(0, 6.0, "/c2", "POST /v1/promote", True, "promote", "promote", '{"n": 3}', "v2")
    )
    assert (a.id, b.id) == (1, 2)
    start = store.record_serving_event(
        ServingEvent(0, 7.0, "canary_start", "v1", "canary-1", 0.1, "go", '{"candidate": "/c1"}')
    )
    end = store.record_serving_event(ServingEvent(0, 8.0, "canary_rollback", "v1", "canary-1", 0.0, "worse"))
    assert (start.id, end.id) == (1, 2)
    store.close()
    again = _rollout(location)
    try:
        assert again.gate_history() == [a, b]
        assert again.gate_history()[1].version == "v2" and again.gate_history()[1].promote is True
        assert again.serving_events() == [start, end]
    finally:
        again.close()
