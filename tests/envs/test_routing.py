"""Routing-v0: exact replay, episodes, seeding, budgets, λ conditioning, partial logs, no copies."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import routing_env  # noqa: F401  (registers the ids)
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.envs import OutcomeModel, RoutingEnv
from routing_env.errors import ConfigurationError, ModelMismatchError, PartialInformationError


@lru_cache(maxsize=1)
def _data() -> tuple[LoggedDataset, dict[tuple[str, str], pd.Series], float]:
    """A dataset, its long table indexed by (query_id, model), and the cost scale computed from that table."""
    ds = make_synthetic(n_queries=60, models=5, n_features=4, seed=3)
    frame = ds.to_frame()
    rows = {(r["query_id"], r["model"]): r for _, r in frame.iterrows()}
    scale = float(frame.groupby("model")["cost"].mean().max())
    return ds, rows, scale


def _independent_reward(qid: str, model: str, lam: float, lw: float) -> float:
    """The ARCHITECTURE.md reward recomputed from the long table, without LoggedDataset's methods."""
    _, rows, scale = _data()
    row = rows[(qid, model)]
    return float(row["quality"] - lam * row["cost"] / scale - lw * row["latency_s"])


@settings(max_examples=50, deadline=None)
@given(
    lam=st.floats(0.0, 5.0),
    lw=st.floats(0.0, 2.0),
    query=st.integers(0, 59),
    action=st.integers(0, 4),
)
def test_reward_is_exact_replay_of_the_logged_row(lam: float, lw: float, query: int, action: int) -> None:
    ds, rows, _ = _data()
    env = RoutingEnv(dataset=ds, cost_weight=lam, latency_weight=lw)
    _, info0 = env.reset(seed=0, options={"query_index": query})
    assert info0["query_index"] == query
    _, reward, terminated, truncated, info = env.step(action)
    qid, model = ds.query_ids[query], ds.models[action]
    expected = _independent_reward(qid, model, lam, lw)
    assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert terminated and not truncated
    row = rows[(qid, model)]
    assert info["query_id"] == qid
    assert info["quality"] == row["quality"]
    assert info["cost"] == pytest.approx(row["cost"])
    assert info["latency"] == pytest.approx(row["latency_s"], rel=1e-6)
    # Oracle: the best of all models recomputed independently, ties to the cheaper model.
    all_r = [_independent_reward(qid, m, lam, lw) for m in ds.models]
    assert info["oracle_reward"] == pytest.approx(max(all_r), rel=1e-9, abs=1e-12)
    assert all_r[info["oracle_action"]] == pytest.approx(max(all_r), rel=1e-9, abs=1e-12)
    assert info["regret"] == pytest.approx(max(all_r) - expected, abs=1e-9)
    assert info["regret"] >= -1e-12


@settings(max_examples=30, deadline=None)
@given(lam=st.floats(0.0, 5.0), query=st.integers(0, 59))
def test_sampled_lambda_path_matches_the_dataset_oracle(lam: float, query: int) -> None:
    ds, _, _ = _data()
    # A degenerate range takes the per-episode λ code path with a known λ.
    env = RoutingEnv(dataset=ds, cost_weight_range=(lam, lam), latency_weight=0.1)
    env.reset(seed=0, options={"query_index": query})
    r = ds.rewards(lam, 0.1)
    for a in range(ds.n_models):
        env.reset(options={"query_index": query})
        _, reward, *_, info = env.step(a)
        assert reward == pytest.approx(r[query, a], rel=1e-12, abs=1e-12)
        assert info["oracle_action"] == ds.oracle_actions(lam, 0.1)[query]
        assert info["cost_weight"] == lam


def cheap_and_dear(quality: list[list[float]], cost: list[list[float]]) -> LoggedDataset:
    """Two queries ``a``, ``b`` (one feature, 0 and 1) × two models ``cheap``, ``dear``: ``quality``/``cost`` (2, 2)."""
    return LoggedDataset(
        models=("cheap", "dear"), query_ids=["a", "b"], quality=quality, cost=cost, features=[[0.0], [1.0]]
    )


@pytest.mark.parametrize("sampled", [False, True])
def test_oracle_ties_go_to_the_cheaper_model(sampled: bool) -> None:
    ds = cheap_and_dear(quality=[[1.0, 1.0], [0.0, 1.0]], cost=[[0.001, 0.002], [0.001, 0.002]])
    env = RoutingEnv(dataset=ds, cost_weight_range=(0.0, 0.0)) if sampled else RoutingEnv(dataset=ds)
    env.reset(seed=0, options={"query_index": 0})
    assert env.step(1)[4]["oracle_action"] == 0
    env.reset(options={"query_index": 1})
    assert env.step(0)[4]["oracle_action"] == 1


def test_queries_are_drawn_without_replacement_per_pass(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small, queries_per_episode=7)
    n = small.n_queries
    env.reset(seed=1)
    seen = [env.query_index]
    while len(seen) < 2 * n:
        _, _, terminated, _, _ = env.step(0)
        if terminated:
            env.reset()
        seen.append(env.query_index)
    assert sorted(seen[:n]) == list(range(n))
    assert sorted(seen[n:]) == list(range(n))
    assert seen[:n] != seen[n:], "each pass must be reshuffled"


def test_episode_length_and_obs(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small, queries_per_episode=3)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, small.features[env.query_index])
    flags = []
    for _ in range(3):
        obs, _, terminated, truncated, _ = env.step(1)
        flags.append(terminated)
        assert not truncated
    assert flags == [False, False, True]
    with pytest.raises(ConfigurationError, match="finished episode"):
        env.step(0)


def test_same_seed_same_trajectory_and_different_seed_differs(small: LoggedDataset) -> None:
    def run(seed: int) -> tuple[list[int], list[float]]:
        env = RoutingEnv(dataset=small, cost_weight_range=(0.0, 2.0), observe_cost_weight=True)
        env.reset(seed=seed)
        queries, rewards = [], []
        for t in range(50):
            queries.append(env.query_index)
            rewards.append(float(env.step(t % 4)[1]))
            env.reset()
        return queries, rewards

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_cost_weight_is_sampled_per_episode_and_observed(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small, cost_weight_range=(0.5, 1.5), observe_cost_weight=True)
    lams = []
    for i in range(40):
        obs, info = env.reset(seed=0 if i == 0 else None)
        assert obs.shape == (small.n_features + 1,)
        assert obs[-1] == np.float32(info["cost_weight"])
        lams.append(info["cost_weight"])
        q = env.query_index
        _, reward, *_ = env.step(2)
        expected = small.rewards(info["cost_weight"])[q, 2]
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert min(lams) >= 0.5 and max(lams) <= 1.5 and len(set(lams)) == 40
    # A per-episode override pins λ for evaluation along the frontier.
    obs, info = env.reset(options={"cost_weight": 3.0})
    assert info["cost_weight"] == 3.0 and obs[-1] == 3.0
    assert env.observation_space.contains(obs)


def test_model_subset_routes_over_those_models_with_the_full_datasets_cost_scale(
    small: LoggedDataset,
) -> None:
    names = [small.models[3], small.models[1]]
    env = RoutingEnv(dataset=small, models=names, cost_weight=1.0)
    assert env.action_space.n == 2
    env.reset(seed=0)
    q = env.query_index
    _, reward, *_ = env.step(0)
    assert reward == pytest.approx(small.rewards(1.0)[q, 3])
    with pytest.raises(ModelMismatchError, match="not in the dataset"):
        RoutingEnv(dataset=small, models=["nope"])


def test_budget_masks_unaffordable_models_and_ends_the_episode(small: LoggedDataset) -> None:
    mean = small.mean_cost()
    budget = float(3 * mean.max())
    env = RoutingEnv(dataset=small, budget=budget, queries_per_episode=50)
    obs, _ = env.reset(seed=0)
    assert obs[-1] == 1.0
    spent, steps, exhausted = 0.0, 0, False
    strongest = int(np.argmax(mean))
    while True:
        mask = env.action_masks()
        q = env.query_index
        np.testing.assert_array_equal(mask, small.cost[q] <= budget - spent + 1e-15)
        action = strongest if mask[strongest] else int(np.flatnonzero(mask)[0])
        obs, _, terminated, _, info = env.step(action)
        steps += 1
        assert not info["refused"]
        spent += small.cost[q, action]
        assert info["budget_left"] == pytest.approx(budget - spent)
        assert obs[-1] == pytest.approx((budget - spent) / budget, rel=1e-5)
        if terminated:
            exhausted = info["budget_exhausted"]
            break
    assert exhausted and steps < 50
    # The next query could not be paid for by any model.
    assert small.cost[env.query_index].min() > budget - spent


def test_unaffordable_call_is_refused_with_zero_reward() -> None:
    ds = cheap_and_dear(quality=[[0.0, 1.0], [0.0, 1.0]], cost=[[1.0, 5.0], [1.0, 5.0]])
    env = RoutingEnv(dataset=ds, budget=2.0, queries_per_episode=2)
    env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), [True, False])
    _, reward, terminated, _, info = env.step(1)
    assert info["refused"] and reward == 0.0 and info["budget_left"] == 2.0 and not terminated


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost_weight": -1.0}, "cost_weight must be a finite number ≥ 0, got -1.0"),
        ({"cost_weight_range": (2.0, 1.0)}, r"cost_weight_range must satisfy 0 ≤ low ≤ high"),
        (
            {"cost_weight_range": (0.0, 1.0), "cost_weight_sampling": "loguniform"},
            r"cost_weight_sampling must be one of \['uniform', 'log_uniform'\], got 'loguniform'",
        ),
        (
            {"cost_weight_sampling": "log_uniform"},
            r"cost_weight_sampling='log_uniform' draws λ from cost_weight_range, which is not set",
        ),
        ({"queries_per_episode": 0}, "queries_per_episode must be an integer ≥ 1, got 0"),
        ({"budget": 1e-9}, "budget must be a positive USD amount"),
        ({"cost_scale": "median"}, "cost_scale must be 'max_mean' or a positive float"),
        ({"models": "small-3b"}, "models must be a sequence of model names"),
        ({"render_mode": "human"}, "render_mode must be None or 'ansi'"),
    ],
)
def test_bad_arguments_raise_clear_errors(small: LoggedDataset, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RoutingEnv(dataset=small, **kwargs)


def test_bad_actions_and_options_raise(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small)
    env.reset(seed=0)
    with pytest.raises(ConfigurationError, match=r"action must be an int in \[0, 4\), got 4"):
        env.step(4)
    with pytest.raises(ConfigurationError, match=r"action must be an int in \[0, 4\), got -1"):
        env.step(-1)
    with pytest.raises(ConfigurationError, match=r"options\['query_index'\] must be in \[0, 300\), got 300"):
        env.reset(options={"query_index": 300})
    with pytest.raises(ConfigurationError, match="unknown reset options"):
        env.reset(options={"query": 1})


def test_latency_weight_needs_latency() -> None:
    ds = LoggedDataset(models=("a",), query_ids=["q"], quality=[[1.0]], cost=[[1.0]], features=[[0.0]])
    with pytest.raises(ConfigurationError, match=r"latency_weight=0\.5 needs latency_s"):
        RoutingEnv(dataset=ds, latency_weight=0.5)


def _partial(ds: LoggedDataset, seed: int = 0, keep: float = 0.5) -> LoggedDataset:
    rng = np.random.default_rng(seed)
    observed = rng.random(ds.quality.shape) < keep
    observed[np.arange(ds.n_queries), rng.integers(0, ds.n_models, ds.n_queries)] = True
    return replace(ds, observed=observed)


def test_partial_logs_are_refused_without_an_outcome_model(small: LoggedDataset) -> None:
    partial = _partial(small)
    assert not partial.is_full_information
    with pytest.raises(PartialInformationError, match="outcome_model="):
        RoutingEnv(dataset=partial)
    with pytest.raises(PartialInformationError):
        gym.make("routing_env/Routing-v0", dataset=partial)


def test_outcome_model_imputes_and_marks_imputed_steps(small: LoggedDataset) -> None:
    from sklearn.linear_model import Ridge

    partial = _partial(small)
    model = OutcomeModel.fit(partial, regressor=Ridge(alpha=1.0))
    env = RoutingEnv(dataset=partial, outcome_model=model, cost_weight=0.5)
    flags = {True: 0, False: 0}
    env.reset(seed=0)
    for t in range(200):
        q = env.query_index
        a = t % partial.n_models
        _, reward, _, _, info = env.step(a)
        assert info["imputed"] == (not partial.observed[q, a])
        if partial.observed[q, a]:
            assert info["quality"] == partial.quality[q, a]
            assert reward == pytest.approx(partial.rewards(0.5)[q, a])
        else:
            assert 0.0 <= info["quality"] <= 1.0 and info["cost"] >= 0.0
        flags[info["imputed"]] += 1
        env.reset()
    assert flags[True] > 0 and flags[False] > 0
    # The completion is computed once and shared by every env over the same data.
    env2 = RoutingEnv(dataset=partial, outcome_model=model)
    assert env2.dataset is env.dataset


def test_env_instances_share_the_dataset_arrays(sample: LoggedDataset) -> None:
    a = gym.make("routing_env/Routing-v0").unwrapped
    b = gym.make("routing_env/Routing-v0", cost_weight=1.0).unwrapped
    assert isinstance(a, RoutingEnv) and isinstance(b, RoutingEnv)
    assert a.dataset is b.dataset, "the default dataset is loaded once per process"
    assert np.shares_memory(a.dataset.quality, b.dataset.quality)
    c = RoutingEnv(dataset=sample, models=list(sample.models[:3]))
    d = RoutingEnv(dataset=sample, models=list(sample.models[:3]))
    for name in ("quality", "cost", "features"):
        assert getattr(c.dataset, name) is getattr(sample, name)
    # Derived per-dataset tables are shared too, not rebuilt per instance.
    assert c._tables is d._tables
    assert c._lists.feature_rows[0].base is not None
    assert np.shares_memory(c._lists.feature_rows[5], sample.features)


def test_observations_are_fresh_arrays(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small, queries_per_episode=2)
    obs, _ = env.reset(seed=0)
    obs[:] = 99.0
    assert not (small.features == 99.0).any()
    obs2, *_ = env.step(0)
    assert not np.shares_memory(obs2, small.features)


def test_render_ansi(small: LoggedDataset) -> None:
    env = RoutingEnv(dataset=small, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and small.query_ids[env.query_index] in text


def _episode_lambdas(env: RoutingEnv, n: int, seed: int) -> np.ndarray:
    return np.array([env.reset(seed=seed if i == 0 else None)[1]["cost_weight"] for i in range(n)])


def test_uniform_sampling_is_the_default_and_draws_the_documented_blocks(small: LoggedDataset) -> None:
    from gymnasium.utils import seeding

    env = RoutingEnv(dataset=small, cost_weight_range=(0.2, 1.7))
    assert env.cost_weight_sampling == "uniform"
    lams = _episode_lambdas(env, 2 * small.n_queries, seed=11)
    # Per pass: the permutation of the queries, then n uniform draws (the documented stream layout).
    rng = seeding.np_random(11)[0]
    expected = []
    for _ in range(2):
        rng.permutation(small.n_queries)
        expected.append(rng.uniform(0.2, 1.7, size=small.n_queries))
    np.testing.assert_array_equal(lams, np.concatenate(expected))


@pytest.mark.parametrize(("low", "high"), [(0.01, 2.0), (0.0, 3.0)])
def test_log_uniform_sampling_follows_its_documented_distribution(
    small: LoggedDataset, low: float, high: float
) -> None:
    env = RoutingEnv(
        dataset=small,
        cost_weight_range=(low, high),
        cost_weight_sampling="log_uniform",
        observe_cost_weight=True,
    )
    n = 6000
    lams = _episode_lambdas(env, n, seed=3)
    assert lams.min() >= low and lams.max() <= high
    np.testing.assert_array_equal(lams, _episode_lambdas(env, n, seed=3))  # seeded
    # The documented law: log(λ + ε) uniform on [log(low + ε), log(high + ε)], ε = 1e-3·high only when low = 0.
    eps = 0.0 if low > 0 else 1e-3 * high
    grid = np.geomspace(max(low, 1e-4 * high), high, 200)

    def cdf(x: np.ndarray) -> np.ndarray:
        return np.log((x + eps) / (low + eps)) / np.log((high + eps) / (low + eps))

    empirical = np.searchsorted(np.sort(lams), grid, side="right") / n
    # Dvoretzky–Kiefer–Wolfowitz: sup |F_n − F| ≤ sqrt(log(2/α) / 2n) with probability 1 − α (α = 1e-6 here).
    bound = np.sqrt(np.log(2 / 1e-6) / (2 * n))
    assert np.abs(empirical - cdf(grid)).max() < bound
    # Far more episodes at small λ than uniform sampling gives (≤ 1% below high/100).
    assert (lams < high / 100).mean() > 0.1
    # Every episode's reward uses its drawn λ, and the observation shows it.
    obs, info = env.reset()
    q = env.query_index
    _, reward, *_ = env.step(1)
    assert obs[-1] == np.float32(info["cost_weight"])
    assert reward == pytest.approx(small.rewards(info["cost_weight"])[q, 1], rel=1e-9, abs=1e-12)


def test_log_uniform_sampling_of_a_degenerate_range(small: LoggedDataset) -> None:
    for lam in (0.0, 0.7):
        env = RoutingEnv(dataset=small, cost_weight_range=(lam, lam), cost_weight_sampling="log_uniform")
        assert set(_episode_lambdas(env, 30, seed=0).tolist()) == {lam}
