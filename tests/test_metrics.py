"""routing_env.metrics: hand-computed cases, hypothesis properties, and RouteLLM's oracle APGR reproduced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError, PartialInformationError, ShapeError
from routing_env.metrics import (
    PolicyEvaluation,
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    evaluate_cascade,
    evaluate_policy,
    evaluate_probabilities,
    frontier,
    gap_closed,
    oracle,
    oracle_points,
    single_model_points,
)
from tests.conftest import shared_dataset


class FixedProbs:
    """A minimal Policy returning the same probabilities for every query."""

    def __init__(self, models: tuple[str, ...], probs: list[float]) -> None:
        self.models = models
        self.probs = np.asarray(probs, dtype=float)

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        return np.tile(self.probs, (len(features), 1))


def tiny() -> LoggedDataset:
    """3 queries × 2 models; costs 1 and 3 USD, so cost_scale ('max_mean') = 3."""
    frame = pd.DataFrame(
        {
            "query_id": ["a", "a", "b", "b", "c", "c"],
            "model": ["weak", "strong"] * 3,
            "quality": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
            "cost": [1.0, 3.0] * 3,
        }
    )
    return LoggedDataset.from_frame(frame)


# ---------------------------------------------------------------------- evaluate_policy / oracle
def test_evaluate_policy_hand_computed() -> None:
    ds = tiny()
    ev = evaluate_policy(ds, FixedProbs(ds.models, [0.25, 0.75]), cost_weight=1.5)
    # quality: 0.25·(1+0+0)/3 + 0.75·(1+1+0)/3 = 0.25/3 + 1.5/3
    assert ev.mean_quality == pytest.approx(1.75 / 3)
    assert ev.mean_cost == pytest.approx(0.25 * 1 + 0.75 * 3)
    assert ev.cost_scale == 3.0
    assert ev.mean_reward == pytest.approx(1.75 / 3 - 1.5 * 2.5 / 3)
    assert ev.call_share == pytest.approx((0.25, 0.75))
    assert ev.share("strong") == pytest.approx(0.75)
    # Oracle at λ=1.5: rewards weak = q − 0.5, strong = q − 1.5 → a: weak (0.5), b: weak (−0.5 vs −0.5 tie →
    # cheaper), c: weak (−0.5). Mean −1/6.
    assert ev.oracle_reward == pytest.approx(-1 / 6)
    assert ev.regret == pytest.approx(ev.oracle_reward - ev.mean_reward)
    assert ev.point == (ev.mean_cost, ev.mean_quality)
    assert ev.as_dict()["share_strong"] == pytest.approx(0.75)


def test_oracle_hand_computed() -> None:
    ds = tiny()
    o = oracle(ds, 0.0)
    # λ=0: a → weak (tie, cheaper), b → strong, c → weak (tie).
    assert o.call_share == pytest.approx((2 / 3, 1 / 3))
    assert o.mean_quality == pytest.approx(2 / 3)
    assert o.mean_cost == pytest.approx((1 + 3 + 1) / 3)
    assert o.regret == 0.0


def test_stochastic_policy_scored_by_expectation(small: LoggedDataset) -> None:
    k = small.n_models
    probs = np.full(k, 1.0 / k)
    ev = evaluate_policy(small, FixedProbs(small.models, list(probs)), cost_weight=0.3)
    singles = [evaluate_policy(small, FixedProbs(small.models, list(np.eye(k)[j])), 0.3) for j in range(k)]
    assert ev.mean_reward == pytest.approx(np.mean([s.mean_reward for s in singles]))
    assert ev.mean_quality == pytest.approx(np.mean([s.mean_quality for s in singles]))


def test_evaluation_from_per_query_outcomes_hand_computed() -> None:
    ev = PolicyEvaluation.from_outcomes(
        ("a", "b"),
        0.5,
        quality=np.array([1.0, 0.0, 1.0, 1.0]),
        cost=np.array([0.2, 0.1, 0.2, 0.3]),
        reward=np.array([0.9, -0.05, 0.9, 0.85]),
        call_share=np.array([0.25, 0.75]),
        oracle_reward=0.5,
        cost_scale=1.0,
    )
    assert ev.n_queries == 4 and ev.call_share == (0.25, 0.75)
    assert (ev.mean_quality, ev.mean_cost, ev.mean_reward) == pytest.approx((0.75, 0.2, 0.65))
    # A mean reward above the oracle's (rounding, or an oracle of other logs) gives regret 0, never negative.
    assert ev.regret == 0.0 and ev.oracle_reward == 0.5
    worse = PolicyEvaluation.from_outcomes(
        ("a",), 0.0, np.zeros(2), np.zeros(2), np.array([0.1, 0.3]), [1.0], oracle_reward=0.5, cost_scale=1.0
    )
    assert worse.regret == pytest.approx(0.3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 5.0))
def test_no_policy_beats_the_oracle(seed: int, lam: float) -> None:
    ds = make_synthetic(n_queries=60, models=3, n_features=2, seed=seed)
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=ds.n_queries)
    ev = evaluate_probabilities(ds, probs, lam)
    assert ev.mean_reward <= oracle(ds, lam).mean_reward + 1e-12
    assert ev.regret >= 0.0
    assert sum(ev.call_share) == pytest.approx(1.0)


def test_evaluate_policy_refuses_bad_input(small: LoggedDataset) -> None:
    good = FixedProbs(small.models, [1.0] + [0.0] * (small.n_models - 1))
    with pytest.raises(ConfigurationError, match="cost_weight must be a finite number ≥ 0, got -1"):
        evaluate_policy(small, good, cost_weight=-1)
    with pytest.raises(ModelMismatchError, match="routes over models"):
        evaluate_policy(small, FixedProbs(("x", "y", "z", "w"), [1, 0, 0, 0]), 0.0)
    with pytest.raises(ShapeError, match=r"rows must sum to 1; row 0 sums to 0\.5"):
        evaluate_policy(small, FixedProbs(small.models, [0.5] + [0.0] * (small.n_models - 1)), 0.0)
    with pytest.raises(ShapeError, match=r"must have shape \(n, K\)"):
        evaluate_probabilities(small, np.ones((3, 2)) / 2)
    with pytest.raises(ConfigurationError, match="must implement the Policy protocol"):
        evaluate_policy(small, object(), 0.0)  # type: ignore[arg-type]


def test_partial_information_is_refused() -> None:
    ds = tiny()
    quality = ds.quality.copy()
    quality[0, 1] = np.nan
    cost = ds.cost.copy()
    cost[0, 1] = np.nan
    partial = LoggedDataset(models=ds.models, query_ids=ds.query_ids, quality=quality, cost=cost)
    with pytest.raises(
        PartialInformationError,
        match=(
            rf"evaluate_policy needs every model's outcome on every query, but 1 of {ds.n_queries} queries lack an "
            rf"outcome: model '{ds.models[1]}' has no row on 1 query\. Keep the {ds.n_queries - 1} complete queries "
            r"with dataset\.complete_only\(\)\."
        ),
    ):
        evaluate_policy(partial, FixedProbs(ds.models, [1.0, 0.0]))
    evaluate_policy(partial.complete_only(), FixedProbs(ds.models, [1.0, 0.0]))
    with pytest.raises(PartialInformationError, match="oracle needs every model"):
        oracle(partial)


class HalfStop:
    """A cascade over (weak, strong) that stops after the first call with probability 0.5, or when signal > 0.5."""

    chain = ("weak", "strong")

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        if self.rule == "half":
            return np.full(len(signals), 0.5)
        return (signals[:, -1] > 0.5).astype(float)


def test_evaluate_cascade_hand_computed() -> None:
    base = tiny()
    signal = np.array([[0.9, 0.9], [0.2, 0.8], [0.7, 0.1]], dtype=np.float32)
    ds = LoggedDataset(
        models=base.models, query_ids=base.query_ids, quality=base.quality, cost=base.cost, signal=signal
    )
    # Rule "signal": a and c stop at weak (quality 1, 0; cost 1), b escalates (quality 1, cost 1 + 3).
    ev = evaluate_cascade(ds, HalfStop("signal"), cost_weight=3.0)
    assert ev.mean_quality == pytest.approx(2 / 3)
    assert ev.mean_cost == pytest.approx((1 + 4 + 1) / 3)
    assert ev.mean_reward == pytest.approx(2 / 3 - 1.0 * 2)  # λ/cost_scale = 3/3
    assert ev.call_share == pytest.approx((2 / 3, 1 / 3))
    # Stochastic rule: half the mass stops at weak, half escalates → expectation, not a sample.
    half = evaluate_cascade(ds, HalfStop("half"), cost_weight=0.0)
    assert half.mean_quality == pytest.approx(0.5 * (1 / 3) + 0.5 * (2 / 3))
    assert half.mean_cost == pytest.approx(0.5 * 1 + 0.5 * 4)
    with pytest.raises(ConfigurationError, match="needs per-call signals"):
        evaluate_cascade(base, HalfStop("half"))


# ---------------------------------------------------------------------- frontier / AIQ / gap closed
def test_frontier_hand_computed() -> None:
    pts = [(0, 0.5), (1, 0.6), (2, 0.9), (3, 0.85), (4, 1.0), (1.5, 0.5), (5, 1.0)]
    hull = frontier(pts)
    # (1, 0.6) lies below the chord (0, .5)→(2, .9); (3, .85) and (1.5, .5) are dominated; (5, 1) costs more
    # for the same quality as (4, 1).
    np.testing.assert_allclose(hull, [[0, 0.5], [2, 0.9], [4, 1.0]])


def test_aiq_hand_computed() -> None:
    pts = [(0, 0.5), (2, 0.9), (4, 1.0)]
    # Trapezoids: 2·0.7 + 2·0.95 = 3.3 over width 4.
    assert aiq(pts) == pytest.approx(3.3 / 4)
    # Flat past the last vertex: add width 4 at quality 1.
    assert aiq(pts, (0, 8)) == pytest.approx((3.3 + 4) / 8)
    assert aiq(pts, (2, 2)) == pytest.approx(0.9)
    # Over log(cost) on [1, 4]: q = 0.5 + 0.2c on [1, 2] → 0.5·ln 2 + 0.2; q = 0.8 + 0.05c on [2, 4] → 0.8·ln 2 + 0.1.
    assert aiq(pts, (1, 4), log_cost=True) == pytest.approx((1.3 * np.log(2) + 0.3) / np.log(4))
    with pytest.raises(ConfigurationError, match="log_cost=True needs a cost range above 0 USD"):
        aiq(pts, (0, 4), log_cost=True)
    with pytest.raises(ConfigurationError, match="below the cheapest point of the frontier"):
        aiq(pts, (-1, 4))
    with pytest.raises(ConfigurationError, match="low ≤ high"):
        aiq(pts, (3, 1))


def test_gap_closed_hand_computed() -> None:
    singles = [(1, 0.5), (3, 0.7)]  # zero router AIQ over [1, 3] = 0.6
    oracle_pts = [(1, 0.7), (2, 0.9)]  # AIQ = (0.8 + 0.9)/2 = 0.85
    router = [(1, 0.5), (2, 0.8), (3, 0.8)]  # AIQ = (0.65 + 0.8)/2 = 0.725
    assert gap_closed(router, singles, oracle_pts) == pytest.approx((0.725 - 0.6) / (0.85 - 0.6))
    assert gap_closed(singles, singles, oracle_pts) == pytest.approx(0.0)
    assert gap_closed(oracle_pts, singles, oracle_pts) == pytest.approx(1.0)
    with pytest.raises(ConfigurationError, match="does not exceed the zero router"):
        gap_closed(router, singles, singles)


def test_cost_at_quality() -> None:
    pts = [(0, 0.5), (2, 0.9), (4, 1.0)]
    assert cost_at_quality(pts, 0.7) == pytest.approx(1.0)
    assert cost_at_quality(pts, 0.2) == 0.0
    assert np.isnan(cost_at_quality(pts, 1.01))


def test_bad_points_are_refused() -> None:
    with pytest.raises(ShapeError, match=r"\(m, 2\) array of \(cost, quality\)"):
        frontier([1, 2, 3])
    with pytest.raises(ShapeError, match="must be finite"):
        frontier([(0, np.nan)])


points_strategy = st.lists(
    st.tuples(st.floats(0, 10, allow_nan=False), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=25
)


@settings(max_examples=100, deadline=None)
@given(points_strategy)
def test_frontier_properties(points: list[tuple[float, float]]) -> None:
    hull = frontier(points)
    pts = np.asarray(points)
    # Sorted by cost, strictly increasing quality, concave (strictly decreasing slopes).
    assert (np.diff(hull[:, 0]) > 0).all()
    assert (np.diff(hull[:, 1]) > 0).all()
    # Concave: every vertex lies strictly above the chord of its neighbours (cross product < 0).
    o, a, p = hull[:-2], hull[1:-1], hull[2:]
    cross = (a[:, 0] - o[:, 0]) * (p[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (p[:, 0] - o[:, 0])
    assert (cross < 0).all()
    # Every vertex is an input point; the hull dominates every point at or above its first cost.
    assert all(any(np.allclose(v, p) for p in pts) for v in hull)
    c0 = hull[0, 0]
    for c, q in pts:
        if c >= c0:
            assert np.interp(c, hull[:, 0], hull[:, 1], right=hull[-1, 1]) >= q - 1e-9
    # The best quality and the cheapest cost are kept.
    assert hull[-1, 1] == pytest.approx(pts[:, 1].max())
    assert hull[0, 0] == pytest.approx(pts[:, 0].min())


@settings(max_examples=80, deadline=None)
@given(points_strategy, points_strategy)
def test_aiq_properties(points: list[tuple[float, float]], extra: list[tuple[float, float]]) -> None:
    pts = np.asarray(points)
    value = aiq(pts)
    assert pts[:, 1].min() - 1e-9 <= value <= pts[:, 1].max() + 1e-9
    # Adding operating points never lowers the frontier (on a range where both are defined).
    lo, hi = float(pts[:, 0].min()), float(pts[:, 0].max())
    more = np.concatenate([pts, np.asarray(extra)])
    if more[:, 0].min() >= lo:
        assert aiq(more, (lo, hi)) >= aiq(pts, (lo, hi)) - 1e-9
    # Dominated points change nothing.
    dominated = np.column_stack([pts[:, 0] + 1.0, pts[:, 1] - 0.5])
    assert aiq(np.concatenate([pts, dominated]), (lo, hi)) == pytest.approx(aiq(pts, (lo, hi)))


# ---------------------------------------------------------------------- APGR / CPT
def test_apgr_hand_computed() -> None:
    # A random router: quality linear in the call share → PGR(c) = c → APGR 0.5, CPT(x) = x.
    shares = np.linspace(0, 1, 11)
    q = 0.6 + 0.2 * shares
    assert apgr(shares, q, weak_quality=0.6, strong_quality=0.8) == pytest.approx(0.5)
    assert apgr(shares, q, weak_quality=0.6, strong_quality=0.8, hull=False) == pytest.approx(0.5)
    assert cpt(shares, q, 0.5, weak_quality=0.6, strong_quality=0.8) == pytest.approx(0.5)
    assert cpt(shares, q, 0.8, weak_quality=0.6, strong_quality=0.8, hull=False) == pytest.approx(0.8)
    # An oracle: +b for the first share b, flat after → APGR = (b − b²/2)/gap.
    b, w, s = 0.2, 0.6, 0.7
    assert apgr([b], [w + b], weak_quality=w, strong_quality=s) == pytest.approx((b - b * b / 2) / (s - w))
    assert cpt([b], [w + b], 0.5, weak_quality=w, strong_quality=s) == pytest.approx(0.05)
    # The raw curve can dip: (0.5, 0.75) then the all-strong end (1, 0.7) → trapezoids 0.5·0.675 + 0.5·0.725.
    raw = apgr([0.5], [0.75], weak_quality=w, strong_quality=s, hull=False)
    assert raw == pytest.approx((0.5 * 0.675 + 0.5 * 0.725 - w) / (s - w))
    assert apgr([0.5], [0.75], weak_quality=w, strong_quality=s) > raw


def test_apgr_refuses_bad_input() -> None:
    with pytest.raises(ConfigurationError, match="percentages must be divided by 100"):
        apgr([50.0], [0.7], weak_quality=0.6, strong_quality=0.8)
    with pytest.raises(ConfigurationError, match="strong_quality must exceed weak_quality"):
        apgr([0.5], [0.7], weak_quality=0.8, strong_quality=0.6)
    with pytest.raises(ShapeError, match="one length"):
        apgr([0.5, 0.6], [0.7], weak_quality=0.6, strong_quality=0.8)
    with pytest.raises(ConfigurationError, match=r"x must be a fraction of the gap in \[0, 1\]"):
        cpt([0.5], [0.7], 50, weak_quality=0.6, strong_quality=0.8)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=15),
    st.floats(0.0, 0.5),
    st.floats(0.05, 0.5),
    st.floats(0, 1),
)
def test_apgr_cpt_properties(points: list[tuple[float, float]], weak: float, gap: float, x: float) -> None:
    pts = np.asarray(points)
    strong = weak + gap
    value = apgr(pts[:, 0], pts[:, 1], weak_quality=weak, strong_quality=strong)
    # The hull is never below the straight line from the weak to the strong model.
    assert value >= 0.5 - 1e-9
    assert value >= apgr(pts[:, 0], pts[:, 1], weak_quality=weak, strong_quality=strong, hull=False) - 1e-9
    c = cpt(pts[:, 0], pts[:, 1], x, weak_quality=weak, strong_quality=strong)
    assert 0.0 <= c <= x + 1e-9  # never worse than random mixing, which needs share x


def test_oracle_traces_the_frontier(small: LoggedDataset) -> None:
    pts = oracle_points(small)
    singles = single_model_points(small)
    # The oracle at λ=0 has the best quality of all; at a large λ it is no more expensive than the cheapest model.
    assert pts[0].mean_quality >= singles[:, 1].max()
    assert min(p.mean_cost for p in pts) <= singles[:, 0].min() + 1e-12
    value = gap_closed(singles, singles, pts)
    assert value == pytest.approx(0.0, abs=1e-9)
    assert isinstance(pts[0], PolicyEvaluation)


# ---------------------------------------------------------------------- RouteLLM reproduction
@pytest.mark.datasets
@pytest.mark.parametrize(("benchmark", "expected"), [("mmlu", 1.30), ("gsm8k", 1.13)])
def test_routellm_oracle_apgr(benchmark: str, expected: float) -> None:
    from routing_env.data import load_routellm

    shared_dataset("routellm")
    from tests.conftest import SHARED_DATASETS

    ds = load_routellm(SHARED_DATASETS / "routellm", task=benchmark)
    weak, strong = ds.quality.mean(axis=0)
    assert strong > weak  # column order: weak (Mixtral), strong (GPT-4)
    o = oracle(ds, cost_weight=1e-3)
    value = apgr([o.call_share[1]], [o.mean_quality], weak_quality=weak, strong_quality=strong)
    assert value == pytest.approx(expected, abs=0.01)
