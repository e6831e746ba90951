"""Cascade-v0: chain and free modes, rewards, masks, signals, and no leak of the true quality."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from routing_env.data import LoggedDataset, make_synthetic
from routing_env.envs import CascadeEnv, RoutingEnv
from routing_env.envs.cascade import ACCEPT, ESCALATE
from routing_env.errors import ConfigurationError, PartialInformationError


@pytest.fixture(scope="module")
def ds() -> LoggedDataset:
    return make_synthetic(n_queries=200, models=4, n_features=6, seed=11)


def _routing_reward(ds: LoggedDataset, q: int, model: str, lam: float, lw: float = 0.0) -> float:
    env = RoutingEnv(dataset=ds, cost_weight=lam, latency_weight=lw)
    env.reset(seed=0, options={"query_index": q})
    return float(env.step(ds.model_index(model))[1])


def test_chain_calls_the_first_model_on_reset_and_accepting_matches_routing(ds: LoggedDataset) -> None:
    env = CascadeEnv(dataset=ds, cost_weight=0.7, latency_weight=0.1)
    order = env.models
    assert [ds.mean_cost()[ds.model_index(m)] for m in order] == sorted(ds.mean_cost())
    obs, info = env.reset(seed=3)
    q = env.query_index
    d, k = ds.n_features, len(order)
    np.testing.assert_array_equal(obs[:d], ds.features[q])
    np.testing.assert_array_equal(obs[d : d + k], [1, 0, 0, 0])
    assert obs[d + k] == pytest.approx(ds.signal[q, ds.model_index(order[0])])
    assert obs[d + 2 * k] == pytest.approx(ds.cost[q, ds.model_index(order[0])] / env.cost_scale)
    assert info["signal_source"] == "logged"
    _, reward, terminated, truncated, info = env.step(ACCEPT)
    assert terminated and not truncated
    assert info["answer_model"] == order[0]
    assert info["quality"] == ds.quality[q, ds.model_index(order[0])]
    assert reward == pytest.approx(_routing_reward(ds, q, order[0], 0.7, 0.1))


def test_chain_escalation_charges_every_call_and_returns_the_last_answer(ds: LoggedDataset) -> None:
    lam = 1.3
    env = CascadeEnv(dataset=ds, cost_weight=lam)
    env.reset(seed=0)
    q = env.query_index
    cols = [ds.model_index(m) for m in env.models]
    total = 0.0
    _, r, terminated, _, info = env.step(ESCALATE)
    total += float(r)
    assert not terminated and info["model"] == env.models[1] and info["depth"] == 2
    assert info["cost"] == pytest.approx(ds.cost[q, cols[0]] + ds.cost[q, cols[1]])
    _, r, terminated, _, info = env.step(ACCEPT)
    total += float(r)
    assert terminated and info["answer_model"] == env.models[1]
    expected = ds.quality[q, cols[1]] - lam * (ds.cost[q, cols[0]] + ds.cost[q, cols[1]]) / env.cost_scale
    assert total == pytest.approx(expected)
    assert info["total_cost"] == pytest.approx(ds.cost[q, cols[0]] + ds.cost[q, cols[1]])


def test_max_depth_accepts_automatically(ds: LoggedDataset) -> None:
    env = CascadeEnv(dataset=ds, order=list(ds.models[:3]), max_depth=2)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(ESCALATE)
    assert terminated and not truncated and info["max_depth_reached"]
    assert info["answer_model"] == ds.models[1]


def test_free_mode_masks_and_invalid_actions(ds: LoggedDataset) -> None:
    env = CascadeEnv(dataset=ds, mode="free", invalid_action_penalty=0.25, max_steps=6)
    obs0, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), [False, True, True, True, True])
    # Accepting before any call is invalid: nothing changes, the penalty is charged.
    obs, reward, terminated, truncated, info = env.step(ACCEPT)
    assert info["invalid_action"] and reward == -0.25 and not (terminated or truncated)
    np.testing.assert_array_equal(obs, obs0)
    env.step(1 + 2)
    np.testing.assert_array_equal(env.action_masks(), [True, True, True, False, True])
    _, reward, _, _, info = env.step(1 + 2)
    assert info["invalid_action"] and reward == -0.25 and env.called_models == (ds.models[2],)
    env.step(1 + 0)
    _, _, terminated, truncated, info = env.step(1 + 1)
    assert not info["invalid_action"] and not terminated
    # The sixth step hits max_steps: truncated, no answer.
    _, _, terminated, truncated, info = env.step(1 + 0)
    assert truncated and not terminated and "quality" not in info


def test_best_signal_answer(ds: LoggedDataset) -> None:
    env = CascadeEnv(dataset=ds, mode="free", answer="best_signal")
    env.reset(seed=0)
    q = env.query_index
    env.step(1 + 0)
    env.step(1 + 3)
    _, _, _, _, info = env.step(ACCEPT)
    sig = ds.signal[q]
    expected = ds.models[3] if sig[3] >= sig[0] else ds.models[0]
    assert info["answer_model"] == expected


def _rollout_observations(env: CascadeEnv, seed: int, episodes: int) -> tuple[np.ndarray, list[float]]:
    """Observations and rewards of a fixed, seeded random policy that respects the masks."""
    rng = np.random.default_rng(seed)
    obs_log, rewards = [], []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done = False
        while not done:
            obs_log.append(obs)
            valid = np.flatnonzero(env.action_masks())
            obs, r, terminated, truncated, _ = env.step(int(rng.choice(valid)))
            rewards.append(float(r))
            done = terminated or truncated
        obs, _ = env.reset()
    return np.array(obs_log), rewards


class _LeakyCascade(CascadeEnv):
    """A deliberately broken env that appends the last answer's quality: the checks below must catch it."""

    def _obs(self) -> np.ndarray:
        obs = super()._obs()
        if self._calls:
            obs[-1] = self._lists.quality[self._q][self._columns[self._calls[-1]]]
        return obs


@pytest.mark.parametrize("mode", ["chain", "free"])
def test_observations_do_not_depend_on_quality(ds: LoggedDataset, mode: str) -> None:
    rng = np.random.default_rng(0)
    shuffled = replace(ds, quality=ds.quality[rng.permutation(ds.n_queries)])

    def observations(cls: type[CascadeEnv], data: LoggedDataset) -> tuple[np.ndarray, list[float]]:
        return _rollout_observations(cls(dataset=data, mode=mode, observe_cost_weight=True), 4, 150)

    obs_a, rew_a = observations(CascadeEnv, ds)
    obs_b, rew_b = observations(CascadeEnv, shuffled)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert rew_a != rew_b, "the permutation must change the rewards, or the check has no power"
    # The same check flags an env that leaks quality.
    leak_a, _ = observations(_LeakyCascade, ds)
    leak_b, _ = observations(_LeakyCascade, shuffled)
    assert not np.array_equal(leak_a, leak_b)


def test_no_observation_entry_tracks_the_answer_quality(ds: LoggedDataset) -> None:
    def max_abs_corr(env: CascadeEnv) -> float:
        rng = np.random.default_rng(1)
        rows, quality = [], []
        obs, _ = env.reset(seed=1)
        for _ in range(600):
            action = ESCALATE if (env.mode == "chain" and rng.random() < 0.5) else ACCEPT
            obs, _, terminated, _, info = env.step(action)
            if terminated:
                rows.append(obs)
                quality.append(info["quality"])
                obs, _ = env.reset()
        x, y = np.array(rows, dtype=np.float64), np.array(quality)
        x = x[:, x.std(axis=0) > 0]
        corr = [abs(np.corrcoef(x[:, j], y)[0, 1]) for j in range(x.shape[1])]
        return max(corr)

    honest = max_abs_corr(CascadeEnv(dataset=ds, signal="simulated", verifier_auroc=0.75))
    leaky = max_abs_corr(_LeakyCascade(dataset=ds, signal="simulated", verifier_auroc=0.75))
    assert leaky > 0.99
    assert honest < 0.8


def test_simulated_verifier_has_the_configured_auroc_and_is_documented() -> None:
    ds = make_synthetic(n_queries=3000, models=3, n_features=4, tasks=("math", "code"), seed=2)
    no_signal = replace(ds, signal=None)
    env = CascadeEnv(dataset=no_signal, mode="free", verifier_auroc=0.8, verifier_seed=7)
    _, info = env.reset(seed=0)
    assert "simulated" in info["signal_source"] and "0.8" in info["signal_source"]
    assert "simulated" in env.signal_source
    sig = np.array(env._signal)
    q = ds.quality
    pos, neg = sig[q == 1.0], sig[q == 0.0]
    # Mann-Whitney AUROC on a subsample.
    rng = np.random.default_rng(0)
    p, n = rng.choice(pos, 2000), rng.choice(neg, 2000)
    auroc = (p[:, None] > n[None, :]).mean()
    assert auroc == pytest.approx(0.8, abs=0.03)
    # Seeded: the same verifier seed gives the same scores, another seed different ones.
    again = CascadeEnv(dataset=no_signal, mode="free", verifier_auroc=0.8, verifier_seed=7)
    other = CascadeEnv(dataset=no_signal, mode="free", verifier_auroc=0.8, verifier_seed=8)
    assert again._signal == env._signal and other._signal != env._signal
    with pytest.raises(ConfigurationError, match="signal='logged' needs a signal column"):
        CascadeEnv(dataset=no_signal, signal="logged")


def test_same_seed_same_trajectory(ds: LoggedDataset) -> None:
    a = _rollout_observations(CascadeEnv(dataset=ds, mode="free", cost_weight_range=(0, 2)), 9, 30)
    b = _rollout_observations(CascadeEnv(dataset=ds, mode="free", cost_weight_range=(0, 2)), 9, 30)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    c = _rollout_observations(CascadeEnv(dataset=ds, mode="free", cost_weight_range=(0, 2)), 10, 30)
    assert a[1] != c[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "tree"}, "mode must be 'chain' or 'free', got 'tree'"),
        ({"order": ["small-3b"]}, "order must list at least 2 models"),
        ({"max_depth": 1}, r"max_depth must lie in \[2, 4\] for mode='chain'"),
        ({"mode": "free", "max_depth": 5}, r"max_depth must lie in \[1, 4\]"),
        ({"answer": "first"}, "answer must be 'last' or 'best_signal'"),
        ({"verifier_auroc": 1.0, "signal": "simulated"}, r"verifier_auroc must lie in \[0.5, 1\)"),
        ({"mode": "free", "order": ["small-3b", "open-8b"]}, "order= is for mode='chain'"),
        ({"models": ["small-3b", "open-8b"]}, "models= is for mode='free'"),
        ({"mode": "free", "max_steps": 2}, "max_steps must allow a full cascade"),
    ],
)
def test_bad_arguments(ds: LoggedDataset, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        CascadeEnv(dataset=ds, **kwargs)


def test_partial_logs_need_an_outcome_model(ds: LoggedDataset) -> None:
    observed = np.ones(ds.quality.shape, dtype=bool)
    observed[::2, 1] = False
    with pytest.raises(PartialInformationError, match="outcome_model="):
        CascadeEnv(dataset=replace(ds, observed=observed))


@pytest.mark.slow
def test_maskable_ppo_learns_on_free_mode(ds: LoggedDataset) -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    env = CascadeEnv(dataset=ds, mode="free", cost_weight=0.5)
    model = sb3_contrib.MaskablePPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu"
    )
    model.learn(total_timesteps=256)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert env.action_masks()[int(action)]


def test_partial_logs_with_an_outcome_model(ds: LoggedDataset) -> None:
    from sklearn.linear_model import Ridge

    from routing_env.envs import OutcomeModel

    observed = np.ones(ds.quality.shape, dtype=bool)
    observed[::2, 1] = False
    partial = replace(ds, observed=observed)
    env = CascadeEnv(dataset=partial, mode="free", outcome_model=OutcomeModel.fit(partial, regressor=Ridge()))
    assert "simulated" in env.signal_source and "logged" in env.signal_source
    flags = []
    for episode in range(20):
        env.reset(seed=episode)
        q = env.query_index
        _, _, _, _, info = env.step(1 + 1)
        flags.append(info["imputed"])
        assert info["imputed"] == (not observed[q, 1])
        env.step(ACCEPT)
    assert any(flags) and not all(flags)
