"""agents.training.ppo: the SB3 adapter, train_ppo, SB3Policy (exact probabilities, seeding, save/load without pickle)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.training.ppo import PPOConfig, PPOResult, PPOTrainConfig, SB3Policy, SB3VecEnv, train_ppo
from routing_env.data import LoggedDataset, TextFeaturizer, make_synthetic
from routing_env.errors import ConfigurationError, PartialInformationError, PolicyFormatError, ShapeError
from routing_env.metrics import evaluate_policy
from routing_env.policy import Policy, load_policy

TINY = PPOConfig(n_steps=64, batch_size=128, n_epochs=2, net_arch=(16,))


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=400, models=3, n_features=4, seed=3)


@pytest.fixture(scope="module")
def trained(data: LoggedDataset) -> PPOResult:
    # eval_significance=0: the best mean validation reward is kept, whatever the margin.
    return train_ppo(
        data, 0.5, total_timesteps=2048, n_envs=4, seed=1, config=TINY, eval_freq=512, eval_significance=0.0
    )


def test_train_ppo_returns_a_policy_and_history(trained: PPOResult, data: LoggedDataset) -> None:
    policy = trained.policy
    assert isinstance(policy, SB3Policy)
    assert isinstance(policy, Policy)
    assert policy.models == data.models
    assert policy.n_features == data.n_features
    probs = policy.action_probabilities(data.features)
    assert probs.shape == (data.n_queries, data.n_models)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs >= 0).all()
    # Evaluations every 512 steps plus the final one; the kept policy is the best by validation reward.
    assert len(trained.history) >= 4
    assert [r.timesteps for r in trained.history] == sorted(r.timesteps for r in trained.history)
    best = max(trained.history, key=lambda r: r.mean_reward)
    assert trained.best_timesteps == best.timesteps
    assert trained.fps > 0
    assert trained.model.num_timesteps >= 2048


def test_probabilities_match_the_network_distribution(trained: PPOResult, data: LoggedDataset) -> None:
    import torch

    policy = trained.policy
    assert policy is not None
    x = data.features[:5]
    obs = torch.as_tensor((x - policy.feature_mean) / policy.feature_std)
    with torch.no_grad():
        logits = policy.network.action_net(policy.network.mlp_extractor.forward_actor(obs))
    expected = torch.softmax(logits, dim=1).double().numpy()
    np.testing.assert_allclose(policy.action_probabilities(x), expected, rtol=1e-5, atol=1e-7)


def test_act_samples_from_the_probabilities_with_its_own_seed(
    trained: PPOResult, data: LoggedDataset
) -> None:
    policy = trained.policy
    assert policy is not None
    a1, p1 = policy.with_cost_weight(0.5).act(data.features)
    a2, _ = policy.with_cost_weight(0.5).act(data.features)
    np.testing.assert_array_equal(a1, a2)
    probs = policy.action_probabilities(data.features)
    np.testing.assert_allclose(p1, probs[np.arange(len(a1)), a1])
    assert a1.dtype == np.int64 and p1.dtype == np.float64
    np.testing.assert_array_equal(policy.greedy_actions(data.features), probs.argmax(axis=1))


def test_same_seed_same_policy(data: LoggedDataset, trained: PPOResult) -> None:
    again = train_ppo(
        data, 0.5, total_timesteps=2048, n_envs=4, seed=1, config=TINY, eval_freq=512, eval_significance=0.0
    )
    assert again.policy is not None and trained.policy is not None
    np.testing.assert_allclose(
        again.policy.action_probabilities(data.features), trained.policy.action_probabilities(data.features)
    )
    assert [r.mean_reward for r in again.history] == [r.mean_reward for r in trained.history]


def test_save_load_round_trip_without_pickle(trained: PPOResult, data: LoggedDataset, tmp_path: Path) -> None:
    policy = trained.policy
    assert policy is not None
    policy.save(tmp_path / "ppo")
    doc = json.loads((tmp_path / "ppo" / "policy.json").read_text())
    assert doc["kind"] == "SB3Policy"
    with np.load(tmp_path / "ppo" / "arrays.npz", allow_pickle=False) as arrays:
        assert any(k.startswith("param/") for k in arrays.files)
    loaded = load_policy(tmp_path / "ppo")
    assert isinstance(loaded, SB3Policy)
    np.testing.assert_allclose(
        loaded.action_probabilities(data.features), policy.action_probabilities(data.features), rtol=1e-6
    )
    assert loaded.models == policy.models


def test_load_refuses_mismatched_parameters(trained: PPOResult, tmp_path: Path) -> None:
    policy = trained.policy
    assert policy is not None
    policy.save(tmp_path / "ppo")
    doc = json.loads((tmp_path / "ppo" / "policy.json").read_text())
    doc["config"]["net_arch"] = [8]
    (tmp_path / "ppo" / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFormatError, match=r"parameter .* has shape"):
        SB3Policy.load(tmp_path / "ppo")


def test_lambda_conditioned_policy_moves_along_the_frontier(data: LoggedDataset) -> None:
    result = train_ppo(
        data,
        cost_weight_range=(0.0, 3.0),
        total_timesteps=4096,
        n_envs=4,
        seed=0,
        config=TINY,
        eval_freq=2048,
    )
    policy = result.policy
    assert policy is not None and policy.conditioned
    # Conditioned training draws λ log-uniformly unless told otherwise, and says so in the env arguments.
    assert result.env_kwargs["cost_weight_sampling"] == "log_uniform"
    assert result.history[0].cost_weights == pytest.approx((0.0, 0.75, 1.5, 2.25, 3.0))
    cheap = evaluate_policy(data, policy.with_cost_weight(3.0), 3.0)
    rich = evaluate_policy(data, policy.with_cost_weight(0.0), 0.0)
    assert not np.allclose(
        policy.with_cost_weight(3.0).action_probabilities(data.features),
        policy.with_cost_weight(0.0).action_probabilities(data.features),
    )
    assert cheap.mean_cost <= rich.mean_cost
    with pytest.raises(ConfigurationError, match="cost_weight must be a finite number ≥ 0, got -1"):
        policy.cost_weight = -1


def test_bad_arguments_are_refused(data: LoggedDataset, trained: PPOResult) -> None:
    with pytest.raises(ConfigurationError, match="total_timesteps must be a positive integer, got 0"):
        train_ppo(data, total_timesteps=0)
    with pytest.raises(ConfigurationError, match=r"cost_weight_range must be \(low, high\)"):
        train_ppo(data, cost_weight_range=(1.0, 0.5))
    with pytest.raises(ConfigurationError, match="validation must be a LoggedDataset, a share in"):
        train_ppo(data, validation=1.5)
    with pytest.raises(ConfigurationError, match="env_kwargs must not set 'cost_weight'"):
        train_ppo(data, env_kwargs={"cost_weight": 1.0})
    with pytest.raises(ConfigurationError, match="env_kwargs must not set 'cost_weight_sampling'"):
        train_ppo(data, cost_weight_range=(0.0, 1.0), env_kwargs={"cost_weight_sampling": "uniform"})
    with pytest.raises(ConfigurationError, match=r"cost_weight_sampling must be one of .*got 'gaussian'"):
        train_ppo(data, cost_weight_range=(0.0, 1.0), cost_weight_sampling="gaussian")
    with pytest.raises(ConfigurationError, match="cost_weight_sampling='uniform' needs cost_weight_range"):
        train_ppo(data, cost_weight_sampling="uniform")
    with pytest.raises(ConfigurationError, match=r"PPOConfig\.n_steps must be a positive integer, got 0"):
        PPOConfig(n_steps=0)
    with pytest.raises(ConfigurationError, match=r"PPOConfig\.activation must be one of"):
        PPOConfig(activation="gelu")
    assert trained.policy is not None
    with pytest.raises(ShapeError, match="width 2"):
        trained.policy.action_probabilities(np.zeros((3, 2)))


def test_settings_are_one_config_with_keyword_overrides(data: LoggedDataset) -> None:
    config = PPOTrainConfig(cost_weight=0.5, total_timesteps=512, n_envs=2, ppo=TINY, validation=None)
    result = train_ppo(data, config=config)
    assert result.config == config and result.model.num_timesteps >= 512
    # Keyword arguments override single fields of the given config; a positional λ sets cost_weight.
    again = train_ppo(data, 0.2, config=config, n_envs=4, seed=3)
    assert again.config == PPOTrainConfig(
        cost_weight=0.2, total_timesteps=512, n_envs=4, seed=3, ppo=TINY, validation=None
    )
    assert again.env_kwargs["cost_weight"] == 0.2
    # A PPOConfig as config= sets the hyperparameters of the default settings.
    hyper = train_ppo(data, 0.5, config=TINY, total_timesteps=256, n_envs=2, validation=None)
    assert hyper.config.ppo == TINY and hyper.config.total_timesteps == 256
    with pytest.raises(
        ConfigurationError, match=r"unknown settings \['n_env'\]; the settings are the fields"
    ):
        train_ppo(data, n_env=4)
    with pytest.raises(ConfigurationError, match="either as config= or as ppo=, not both"):
        train_ppo(data, config=TINY, ppo=TINY)
    with pytest.raises(ConfigurationError, match="config must be a PPOTrainConfig or a PPOConfig, got dict"):
        train_ppo(data, config={"n_envs": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="n_envs must be a positive integer, got 0"):
        PPOTrainConfig(n_envs=0)
    with pytest.raises(ConfigurationError, match="torch_threads must be a positive integer or None, got 0"):
        PPOTrainConfig(torch_threads=0)
    with pytest.raises(
        ConfigurationError, match=r"eval_cost_weights must be finite numbers ≥ 0, got \(-1.0,\)"
    ):
        PPOTrainConfig(cost_weight_range=(0.0, 1.0), eval_cost_weights=(-1.0,))
    with pytest.raises(ConfigurationError, match="ppo must be a PPOConfig, got dict"):
        PPOTrainConfig(ppo={})  # type: ignore[arg-type]


def test_vec_env_adapter_follows_sb3_conventions(data: LoggedDataset) -> None:
    import routing_env.envs  # noqa: F401

    venv = gym.make_vec(
        "routing_env/Routing-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        dataset=data,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    env = SB3VecEnv(venv, use_masks=False)
    env.seed(5)
    obs = env.reset()
    assert obs.shape == (3, data.n_features) and obs.dtype == np.float32
    obs2, rewards, dones, infos = env.step(np.array([0, 1, 2]))
    assert obs2.shape == obs.shape and rewards.shape == (3,) and dones.all()
    assert len(infos) == 3
    assert not env.has_attr("action_masks")
    masks = env.action_masks()
    assert masks.shape == (3, data.n_models) and masks.all()
    # Reseeding replays the same queries.
    env.seed(5)
    np.testing.assert_array_equal(env.reset(), obs)
    env.close()


@pytest.mark.slow
def test_ppo_learns_to_route(data: LoggedDataset) -> None:
    train, test = data.split(0.25, seed=0)
    result = train_ppo(train, 0.3, total_timesteps=10_000, n_envs=8, seed=0)
    assert result.policy is not None
    learned = evaluate_policy(test, result.policy, 0.3)
    best_single = float(np.max(np.nanmean(test.rewards(0.3), axis=0)))
    assert learned.mean_reward > best_single


def test_cost_weight_sampling_reaches_the_training_env(
    data: LoggedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict] = []
    make_vec = gym.make_vec

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(dict(kwargs))
        return make_vec(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gym, "make_vec", spy)
    result = train_ppo(
        data,
        cost_weight_range=(0.0, 2.0),
        cost_weight_sampling="uniform",
        total_timesteps=128,
        n_envs=2,
        seed=0,
        config=TINY,
        validation=None,
    )
    assert seen[0]["cost_weight_sampling"] == "uniform" and seen[0]["cost_weight_range"] == (0.0, 2.0)
    assert result.env_kwargs["cost_weight_sampling"] == "uniform"
    # A fixed-λ run leaves the env's sampling alone.
    seen.clear()
    fixed = train_ppo(data, 0.5, total_timesteps=128, n_envs=2, seed=0, config=TINY, validation=None)
    assert "cost_weight_sampling" not in seen[0] and "cost_weight_sampling" not in fixed.env_kwargs


def test_partial_training_data_is_refused_up_front_with_the_counts(data: LoggedDataset) -> None:
    quality = data.quality.copy()
    quality[[3, 7, 7, 11], [0, 1, 2, 0]] = np.nan  # three queries lack four outcomes
    partial = replace(data, quality=quality, observed=np.isfinite(quality))
    for validation in (0.15, None):
        with pytest.raises(
            PartialInformationError,
            match=r"the training logs lack them on 3 of 400 queries \(4 of 1200 query × model cells\); keep the "
            r"complete queries with dataset\.select\(",
        ):
            train_ppo(partial, 0.5, total_timesteps=128, n_envs=2, config=TINY, validation=validation)
    # A partial validation split is named as such, with its own remedy.
    with pytest.raises(PartialInformationError, match="the validation split lack them on 3 of 400 queries"):
        train_ppo(data, 0.5, total_timesteps=128, n_envs=2, config=TINY, validation=partial)


@pytest.fixture(scope="module")
def featurized(data: LoggedDataset) -> tuple[LoggedDataset, TextFeaturizer]:
    assert data.prompts is not None
    featurizer = TextFeaturizer(n_components=6, seed=0).fit(list(data.prompts))
    return data.with_features(featurizer.transform(list(data.prompts))), featurizer


def test_a_trained_policy_carries_and_saves_its_featurizer(
    featurized: tuple[LoggedDataset, TextFeaturizer], tmp_path: Path
) -> None:
    ds, featurizer = featurized
    assert ds.prompts is not None
    prompts = list(ds.prompts[:5])
    policy = train_ppo(
        ds, 0.5, total_timesteps=256, n_envs=2, config=TINY, validation=None, featurizer=featurizer
    ).policy
    assert policy is not None and policy.featurizer is featurizer
    np.testing.assert_allclose(policy.featurize(prompts), featurizer.transform(prompts))
    policy.save(tmp_path / "ppo")
    assert (tmp_path / "ppo" / "featurizer").is_dir()
    loaded = load_policy(tmp_path / "ppo")
    np.testing.assert_allclose(loaded.featurize(prompts), featurizer.transform(prompts), rtol=1e-6)
    np.testing.assert_allclose(
        loaded.action_probabilities(loaded.featurize(prompts)),
        policy.action_probabilities(featurizer.transform(prompts)),
        rtol=1e-5,
    )
    # Without a featurizer the policy says so, and a featurizer of another width is refused at training.
    bare = train_ppo(ds, 0.5, total_timesteps=128, n_envs=2, config=TINY, validation=None).policy
    assert bare is not None
    with pytest.raises(ConfigurationError, match="SB3Policy carries no featurizer; pass features instead"):
        bare.featurize(prompts)
    other = TextFeaturizer(n_components=4, seed=0).fit(list(ds.prompts))
    with pytest.raises(
        ShapeError, match="the featurizer makes 4 features from a prompt, but the dataset has 6"
    ):
        train_ppo(ds, 0.5, total_timesteps=128, n_envs=2, config=TINY, validation=None, featurizer=other)


def test_a_served_ppo_policy_routes_prompts(
    featurized: tuple[LoggedDataset, TextFeaturizer], tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from agents.online import OnlineRouter, SQLiteDecisionStore, create_app

    ds, featurizer = featurized
    assert ds.prompts is not None
    result = train_ppo(
        ds, 0.5, total_timesteps=256, n_envs=2, config=TINY, validation=None, featurizer=featurizer
    )
    assert result.policy is not None
    result.policy.save(tmp_path / "ppo")
    router = OnlineRouter(load_policy(tmp_path / "ppo"), SQLiteDecisionStore(tmp_path / "d.db"))
    with TestClient(create_app(router), raise_server_exceptions=False) as client:
        r = client.post("/v1/route", json={"prompt": str(ds.prompts[0])})
    assert r.status_code == 200, r.text
    assert r.json()["model"] in ds.models


def test_a_checkpoint_replaces_the_best_only_by_a_significant_margin(data: LoggedDataset) -> None:
    from agents.training.ppo import ValidationCallback

    callback = ValidationCallback(lambda: None, data, (0.5,), 1, significance=2.0)  # type: ignore[arg-type, return-value]
    rng = np.random.default_rng(0)
    start = rng.random(400)
    assert callback._beats_best(start)  # the first evaluation is the best so far
    callback._best_per_query = start
    noisy = start + rng.normal(0.0, 0.05, 400) + 0.001  # a higher mean, well within the noise
    assert noisy.mean() > start.mean() and not callback._beats_best(noisy)
    assert callback._beats_best(start + 0.01 + rng.normal(0.0, 0.01, 400))
    with pytest.raises(ConfigurationError, match="eval_significance must be a number ≥ 0, got -1"):
        PPOTrainConfig(eval_significance=-1)


def test_the_network_ignores_the_length_column(data: LoggedDataset, tmp_path: Path) -> None:
    """A ``length:…`` column is read for cost only: its scale is +inf, so the policy's probabilities do not move
    with it, and the saved policy keeps that."""
    rng = np.random.default_rng(0)
    x = np.hstack([np.asarray(data.features), rng.uniform(2, 8, size=(data.n_queries, 1))])
    names = [*(data.feature_names or [f"x{i}" for i in range(data.n_features)]), "length:log_chars"]
    ds = data.with_features(x.astype(np.float32), names=names)
    result = train_ppo(ds, 0.5, total_timesteps=256, n_envs=2, config=TINY, validation=None)
    policy = result.policy
    assert policy is not None and np.isinf(policy.feature_std[-1]) and policy.feature_mean[-1] == 0
    moved = x.copy()
    moved[:, -1] = rng.uniform(0, 12, size=data.n_queries)
    np.testing.assert_array_equal(
        policy.action_probabilities(x[:20]), policy.action_probabilities(moved[:20])
    )
    back = load_policy(policy.save(tmp_path / "ppo"))
    np.testing.assert_array_equal(back.action_probabilities(moved[:20]), policy.action_probabilities(x[:20]))
    with pytest.raises(ConfigurationError, match="feature_std must be > 0"):
        SB3Policy(
            policy.network, policy.models, policy.feature_mean, np.full_like(policy.feature_std, np.nan)
        )
