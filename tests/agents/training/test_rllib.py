"""agents.training.rllib: env registration for RLlib, train_rllib on local Ray, RLlibPolicy (exact probabilities
from the RL module, the shared conformance checks, save/load without pickle), masked free cascades."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import tests.agents.test_conformance as conformance
from agents.training.rllib import RLlibPPOConfig, RLlibResult, RLlibRunError, main, train_rllib
from agents.training.rllib_env import (
    RLlibEnvConfig,
    RLlibSingleEnv,
    RLlibVectorEnv,
    make_rllib_env,
    split_logs,
    spread_seeds,
)
from agents.training.rllib_policy import RLlibCascadePolicy, RLlibPolicy
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.data.sample import write_sample
from routing_env.envs import CascadeVectorEnv, RoutingVectorEnv
from routing_env.errors import ConfigurationError, ModelMismatchError, PolicyFormatError, ShapeError
from routing_env.metrics import PolicyEvaluation, evaluate_policy
from routing_env.policy import Policy, load_policy

#: A short run: iterations of 1,024 env steps, two epochs, a small network.
TINY = RLlibPPOConfig(train_batch_size=1024, minibatch_size=256, num_epochs=2, hidden=(32,))


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample as a parquet file (what env runners read)."""
    return write_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def small_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(n_queries=300, models=3, n_features=4, seed=11).save(
        tmp_path_factory.mktemp("small") / "small.parquet"
    )


# ---------------------------------------------------------------------- env config and creator (no Ray needed)
def test_env_config_round_trips_and_refuses_bad_fields(small_path: Path) -> None:
    config = RLlibEnvConfig(
        str(small_path), cost_weight_range=(0.0, 1.0), holdout=0.2, feature_mean=(0.0,), feature_std=(2.0,)
    )
    as_dict = config.to_env_config()
    json.dumps(as_dict)
    assert RLlibEnvConfig.from_env_config({**as_dict, "num_envs": 4}) == config
    with pytest.raises(ConfigurationError, match=r"unknown env_config keys \['nmu_envs'\]"):
        RLlibEnvConfig.from_env_config({**as_dict, "nmu_envs": 4})
    with pytest.raises(ConfigurationError, match="must name the logs"):
        RLlibEnvConfig.from_env_config({"cost_weight": 0.1})
    with pytest.raises(ConfigurationError, match=r"must not set \['cost_weight', 'dataset'\]"):
        RLlibEnvConfig(str(small_path), env_kwargs={"dataset": 1, "cost_weight": 0.2})
    with pytest.raises(ConfigurationError, match="JSON values only"):
        RLlibEnvConfig(str(small_path), env_kwargs={"models": {"a", "b"}})
    with pytest.raises(ConfigurationError, match="holdout must be a share in"):
        RLlibEnvConfig(str(small_path), holdout=1.5)
    with pytest.raises(ConfigurationError, match="feature_std must be > 0"):
        RLlibEnvConfig(str(small_path), feature_mean=(0.0,), feature_std=(0.0,))


def test_creator_builds_the_native_vector_env_on_the_training_split(small_path: Path) -> None:
    data = LoggedDataset.read(small_path)
    train, _ = data.split(test_size=0.25, seed=5)
    mean = train.features.mean(axis=0)
    std = train.features.std(axis=0)
    config = RLlibEnvConfig(
        str(small_path),
        cost_weight=0.3,
        holdout=0.25,
        split_seed=5,
        feature_mean=tuple(mean.tolist()),
        feature_std=tuple(std.tolist()),
    )
    env = make_rllib_env({**config.to_env_config(), "num_envs": 4})
    assert isinstance(env, RLlibVectorEnv) and isinstance(env.unwrapped, RoutingVectorEnv)
    assert env.num_envs == 4
    inner = env.unwrapped
    # The runner replays the driver's training split, standardised once.
    np.testing.assert_array_equal(inner.dataset.query_ids, train.query_ids)
    np.testing.assert_allclose(inner.dataset.features.mean(axis=0), 0.0, atol=1e-5)
    assert split_logs(config)[0].query_ids.tolist() == train.query_ids.tolist()
    obs, _ = env.reset(seed=3)
    assert obs.shape == (4, data.n_features) and obs.dtype == np.float32
    _, reward, terminated, _, _ = env.step(np.zeros(4, dtype=np.int64))
    assert reward.shape == (4,) and terminated.all()
    single = make_rllib_env(config.to_env_config())
    assert isinstance(single, RLlibSingleEnv) and single.observation_space == inner.single_observation_space


def test_adapter_gives_every_runner_and_copy_its_own_query_stream(small_path: Path) -> None:
    """RLlib seeds runner w with seed + w and Gymnasium copy i with s + i: without spreading, runner 1's copy 1
    replays runner 2's copy 0."""
    config = RLlibEnvConfig(str(small_path)).to_env_config()

    def first_queries(env: Any, seed: int) -> np.ndarray:
        _, info = env.reset(seed=seed)
        return np.asarray(info["query_index"])

    raw = gym.make_vec(
        "routing_env/Routing-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        dataset=LoggedDataset.read(small_path),
    )
    assert first_queries(raw, 101)[1] == first_queries(raw, 102)[0]
    streams = [first_queries(make_rllib_env({**config, "num_envs": 3}), 100 + w) for w in (1, 2)]
    pairs = np.concatenate(streams)
    assert len(set(pairs.tolist())) == pairs.size
    assert spread_seeds(7, 3) == spread_seeds(7, 3) and spread_seeds(7, 3) != spread_seeds(8, 3)
    assert spread_seeds(7, 1, salt=1) != spread_seeds(7, 1, salt=2)


def test_free_cascade_shows_the_action_mask_in_the_observation(small_path: Path) -> None:
    config = RLlibEnvConfig(str(small_path), cascade=True, env_kwargs={"mode": "free"})
    assert config.masked and not RLlibEnvConfig(str(small_path), cascade=True).masked
    env = make_rllib_env({**config.to_env_config(), "num_envs": 2})
    assert isinstance(env.unwrapped, CascadeVectorEnv)
    space = env.single_observation_space
    assert isinstance(space, gym.spaces.Dict) and space["action_mask"].shape == (4,)
    obs, _ = env.reset(seed=0)
    # Nothing called yet: accepting is illegal, every model may be called.
    np.testing.assert_array_equal(obs["action_mask"], [[0, 1, 1, 1]] * 2)
    obs, *_ = env.step(np.array([2, 3]))
    np.testing.assert_array_equal(obs["action_mask"], [[1, 1, 0, 1], [1, 1, 1, 0]])
    assert obs["observations"].shape == (2, env.unwrapped.single_observation_space.shape[0])
    single = make_rllib_env(config.to_env_config())
    obs1, _ = single.reset(seed=0)
    np.testing.assert_array_equal(obs1["action_mask"], [0, 1, 1, 1])


def test_train_rllib_refuses_bad_arguments_before_starting_ray(small_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a file"):
        train_rllib(tmp_path / "missing.parquet")
    with pytest.raises(ConfigurationError, match="save a LoggedDataset"):
        train_rllib(make_synthetic(n_queries=20, seed=1))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="budget"):
        train_rllib(small_path, env_kwargs={"budget": 0.1})
    with pytest.raises(ConfigurationError, match="needs cost_weight_range"):
        train_rllib(small_path, cost_weight_sampling="uniform")
    with pytest.raises(ConfigurationError, match="num_env_runners must be an integer ≥ 0, got -1"):
        train_rllib(small_path, num_env_runners=-1)
    with pytest.raises(ConfigurationError, match="validation must be a share in"):
        train_rllib(small_path, validation=2.0)
    with pytest.raises(ConfigurationError, match="cost_weight must be"):
        train_rllib(small_path, cost_weight=-1.0)
    with pytest.raises(ModelMismatchError, match=r"models \['nope'\] are not in the dataset"):
        train_rllib(small_path, env_kwargs={"models": ["nope"]})
    with pytest.raises(ConfigurationError, match="config must be an RLlibPPOConfig"):
        train_rllib(small_path, config={"lr": 1e-3})  # type: ignore[arg-type]
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "lr must be a positive number, got 0.0"),
        ("train_batch_size", 0, "train_batch_size must be a positive integer, got 0"),
        ("num_epochs", 2.5, "num_epochs must be a positive integer, got 2.5"),
        ("gamma", 1.5, r"gamma must be in \[0, 1\], got 1.5"),
        ("entropy_coeff", -0.1, "entropy_coeff must be a number ≥ 0"),
        ("hidden", (0,), "hidden must hold positive widths"),
        ("activation", "sigmoid", "activation must be one of"),
    ],
)
def test_config_refuses_bad_hyperparameters(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RLlibPPOConfig(**{field: value})


# ---------------------------------------------------------------------- training on local Ray
def short_run(path: Path, cost_weight: float, **overrides: Any) -> RLlibResult:
    """A :data:`TINY` run on one remote env runner stepping a vector env of 4 copies, validated every 1,024 steps."""
    kwargs: dict[str, Any] = {
        "num_env_runners": 1,
        "num_envs_per_env_runner": 4,
        "eval_freq": 1024,
        "config": TINY,
    }
    return train_rllib(path, cost_weight, **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def trained(ray_local: Any, sample_path: Path) -> RLlibResult:
    """PPO via RLlib on the bundled sample."""
    return short_run(sample_path, 0.5, total_timesteps=3072, seed=2)


@pytest.mark.slow
def test_registered_env_ids_build_our_envs(ray_local: Any, small_path: Path) -> None:
    from ray.rllib.env.env_context import EnvContext
    from ray.tune.registry import ENV_CREATOR, _global_registry

    from agents.training.rllib_env import register_rllib_envs

    routing_id, cascade_id = register_rllib_envs()
    assert (routing_id, cascade_id) == ("routing_env/Routing-v0", "routing_env/Cascade-v0")
    config = RLlibEnvConfig(str(small_path)).to_env_config()
    env = _global_registry.get(ENV_CREATOR, routing_id)(EnvContext({**config, "num_envs": 2}, worker_index=1))
    assert isinstance(env.unwrapped, RoutingVectorEnv)
    # A hand-written config for Cascade-v0 need not say cascade=True; the id does.
    cascade = _global_registry.get(ENV_CREATOR, cascade_id)(EnvContext({"dataset_path": str(small_path)}, 1))
    assert type(cascade.unwrapped).__name__ == "CascadeEnv"
    with pytest.raises(ConfigurationError, match="cascade=True, but the env id is 'routing_env/Routing-v0'"):
        _global_registry.get(ENV_CREATOR, routing_id)({**config, "cascade": True})


@pytest.mark.slow
def test_train_rllib_returns_the_best_validated_policy(trained: RLlibResult, sample_path: Path) -> None:
    policy = trained.policy
    assert isinstance(policy, RLlibPolicy) and isinstance(policy, Policy)
    data = LoggedDataset.read(sample_path)
    assert policy.models == data.models and policy.n_features == data.n_features
    assert trained.timesteps >= 3072 and trained.iterations == 3
    assert [v.timesteps for v in trained.history] == [1024, 2048, 3072]
    best = max(trained.history, key=lambda v: v.mean_reward)
    assert trained.best_timesteps == best.timesteps
    assert trained.fps > 0 and trained.setup_seconds > 0
    # The validation split is the one the runners did not train on; scoring it again gives the kept value.
    _, valid = split_logs(trained.env_config)
    assert valid is not None
    again = evaluate_policy(valid, policy, 0.5, cost_scale=best.evaluations[0].cost_scale)
    assert again.mean_reward == pytest.approx(best.mean_reward, abs=1e-12)
    # Learning happened: the kept policy beats the uniform start.
    first = trained.history[0].evaluations[0]
    assert best.mean_reward > first.mean_reward - 1e-12
    uniform = float(valid.rewards(0.5, cost_scale=best.evaluations[0].cost_scale).mean())
    assert best.mean_reward > uniform


@pytest.mark.slow
def test_policy_probabilities_are_the_rl_modules(trained: RLlibResult) -> None:
    """The RL module, loaded with the trained head, gives the same distribution through RLlib's own forward pass
    and action distribution."""
    import torch
    from ray.rllib.core.columns import Columns

    from agents.training.rllib_module import RoutingPPOModule

    policy = trained.policy
    assert isinstance(policy, RLlibPolicy)
    module = RoutingPPOModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (policy.n_features,), np.float32),
        action_space=gym.spaces.Discrete(len(policy.models)),
        inference_only=True,
        model_config={"hidden": list(policy.hidden), "activation": policy.activation},
    )
    module.pi.load_state_dict({k: torch.as_tensor(v) for k, v in policy.parameters().items()})
    x = np.random.default_rng(0).normal(size=(64, policy.n_features)).astype(np.float32)
    obs = torch.as_tensor((x - policy.feature_mean) / policy.feature_std)
    out = module.forward_inference({Columns.OBS: obs})
    dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    probs = np.stack(
        [dist.logp(torch.full((64,), a)).exp().double().numpy() for a in range(len(policy.models))], axis=1
    )
    np.testing.assert_allclose(policy.action_probabilities(x), probs, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_too_many_env_runners_for_the_cluster_is_refused(ray_local: Any, small_path: Path) -> None:
    with pytest.raises(RLlibRunError, match="num_env_runners=3 needs 3 CPUs, but the Ray cluster has 2"):
        short_run(small_path, 0.0, num_env_runners=3, total_timesteps=64)


@pytest.mark.slow
def test_same_seed_same_policy(ray_local: Any, small_path: Path) -> None:
    def run(seed: int) -> RLlibPolicy:
        result = short_run(
            small_path, 0.3, num_env_runners=0, total_timesteps=1024, seed=seed, validation=None
        )
        assert isinstance(result.policy, RLlibPolicy)
        return result.policy

    a, b, c = run(4), run(4), run(5)
    for name, value in a.parameters().items():
        np.testing.assert_array_equal(value, b.parameters()[name])
    assert any(not np.array_equal(v, c.parameters()[k]) for k, v in a.parameters().items())


# ---------------------------------------------------------------------- free cascades: the mask in the RL module
@pytest.fixture(scope="module")
def free_cascade(ray_local: Any, small_path: Path) -> RLlibResult:
    return short_run(small_path, 0.3, cascade=True, env_kwargs={"mode": "free"}, total_timesteps=2048, seed=1)


@pytest.mark.slow
def test_free_cascade_policy_never_takes_a_masked_action(free_cascade: RLlibResult, small_path: Path) -> None:
    policy = free_cascade.policy
    assert isinstance(policy, RLlibCascadePolicy) and policy.mode == "free"
    assert policy.n_actions == 4 and len(free_cascade.history) == 2
    assert all(isinstance(e, PolicyEvaluation) for v in free_cascade.history for e in v.evaluations)
    # Raw features (no standardisation in the env): the policy standardises them itself.
    env = make_rllib_env(
        {
            **RLlibEnvConfig(str(small_path), cascade=True, env_kwargs={"mode": "free"}).to_env_config(),
            "num_envs": 8,
        }
    )
    obs, _ = env.reset(seed=0)
    for _ in range(40):
        mask = obs["action_mask"].astype(bool)
        probs = policy.observation_probabilities(obs["observations"], mask)
        assert (probs[~mask] == 0.0).all()
        actions, props = policy.act(obs["observations"], mask)
        assert mask[np.arange(8), actions].all() and (props > 0).all()
        obs, _, _, _, info = env.step(actions)
        assert not np.asarray(info.get("invalid_action", np.zeros(8, bool)))[info["_invalid_action"]].any()
    # Unmasked, the same network does put mass on illegal actions: the mask is what keeps them out.
    free = policy.observation_probabilities(obs["observations"])
    assert (free[~obs["action_mask"].astype(bool)] > 0).all()


@pytest.mark.slow
def test_cascade_policy_evaluation_and_round_trip(free_cascade: RLlibResult, tmp_path: Path) -> None:
    policy = free_cascade.policy
    assert isinstance(policy, RLlibCascadePolicy)
    _, valid = split_logs(free_cascade.env_config)
    assert valid is not None
    value = policy.evaluate(valid)
    best = max(free_cascade.history, key=lambda v: v.mean_reward)
    assert value.mean_reward == pytest.approx(best.mean_reward, abs=1e-12)
    assert sum(value.call_share) == pytest.approx(1.0)
    loaded = load_policy(policy.save(tmp_path / "cascade"))
    assert isinstance(loaded, RLlibCascadePolicy) and loaded.env_kwargs == policy.env_kwargs
    obs = np.random.default_rng(1).normal(size=(6, policy.n_inputs))
    mask = np.ones((6, 4), dtype=bool)
    mask[:, 0] = False
    np.testing.assert_array_equal(
        loaded.observation_probabilities(obs, mask), policy.observation_probabilities(obs, mask)
    )
    assert loaded.evaluate(valid) == value
    # 4 features, called flags and signals of 3 models, the spend.
    with pytest.raises(ShapeError, match=r"observations must have shape \(n, 11\), got \(6, 3\)"):
        policy.observation_probabilities(obs[:, :3])
    with pytest.raises(ConfigurationError, match="at least one action"):
        policy.observation_probabilities(obs, np.zeros((6, 4), dtype=bool))


# ---------------------------------------------------------------------- the command line, and the shared tester
@dataclass(frozen=True)
class CliRun:
    data: LoggedDataset
    result: RLlibResult
    policy_dir: Path
    printed: str

    def load(self, ds: LoggedDataset) -> RLlibPolicy:
        """A fresh copy of the saved policy (same seed, same draws); only for the logs it was trained on."""
        assert ds is self.data
        loaded = load_policy(self.policy_dir)
        assert isinstance(loaded, RLlibPolicy)
        return loaded


@pytest.fixture(scope="module")
def cli_run(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """A λ-conditioned policy trained by ``python -m agents.training.rllib`` on the conformance tester's logs."""
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic(n_queries=240, models=4, n_features=6, seed=5)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = main(
            [
                str(data.save(root / "logs.parquet")), "--out", str(root / "policy"), "--cost-weight-range", "0",
                "1", "--timesteps", "1024", "--num-env-runners", "0", "--num-envs-per-env-runner", "4",
                "--seed", "3", "--validation", "0.2", "--train-batch-size", "1024", "--num-epochs", "2",
                "--hidden", "32",
            ]
        )  # fmt: skip
    return CliRun(data, result, root / "policy", printed.getvalue())


@pytest.mark.slow
@pytest.mark.parametrize(
    "check", sorted(n for n in dir(conformance.TestPolicyConformance) if n.startswith("test_"))
)
def test_rllib_policy_passes_the_shared_conformance_checks(
    check: str, cli_run: CliRun, tmp_path: Path
) -> None:
    """Every check of ``tests/agents/test_conformance.py`` on the policy the command line saved."""
    given = {
        "case": conformance.PolicyCase("RLlibPolicy-PPO", cli_run.load, prob_atol=1e-9),
        "train": cli_run.data,
        "other_models": cli_run.data.subset_models(cli_run.data.models[:-1]),
        "tmp_path": tmp_path,
    }
    method = getattr(conformance.TestPolicyConformance(), check)
    method(**{name: given[name] for name in inspect.signature(method).parameters})


@pytest.mark.slow
def test_cli_trains_a_conditioned_policy(cli_run: CliRun) -> None:
    policy = cli_run.load(cli_run.data)
    assert policy.hidden == (32,) and cli_run.result.timesteps == 1024
    assert "[rllib] t=1024" in cli_run.printed
    assert f"saved RLlibPolicy to {cli_run.policy_dir}" in cli_run.printed
    assert policy.conditioned and policy.cost_weight_range == (0.0, 1.0) and policy.n_inputs == 7
    history = cli_run.result.history
    assert [len(v.evaluations) for v in history] == [5]
    assert [e.cost_weight for e in history[0].evaluations] == [0.0, 0.25, 0.5, 0.75, 1.0]
    x = cli_run.data.features[:20]
    assert not np.allclose(
        policy.with_cost_weight(0.0).action_probabilities(x),
        policy.with_cost_weight(1.0).action_probabilities(x),
    )


@pytest.mark.slow
def test_load_refuses_a_policy_whose_parameters_do_not_fit(cli_run: CliRun, tmp_path: Path) -> None:
    saved = cli_run.load(cli_run.data).save(tmp_path / "p")
    doc = json.loads((saved / "policy.json").read_text())
    doc["config"]["hidden"] = [64, 64]
    (saved / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFormatError, match="do not match the network's"):
        load_policy(saved)
    doc["config"]["hidden"] = [7]
    (saved / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(
        PolicyFormatError, match=r"parameter '0.weight' has shape \(32, 7\), the network expects \(7, 7\)"
    ):
        load_policy(saved)


@pytest.mark.slow
def test_a_job_joins_an_existing_cluster_by_address(ray_local: Any, small_path: Path, tmp_path: Path) -> None:
    """What `ray job submit` runs: a second driver that joins the running Ray by its address, trains, saves, leaves."""
    address = ray_local.get_runtime_context().gcs_address
    argv = [
        str(small_path), "--out", str(tmp_path / "policy"), "--address", address, "--num-env-runners", "1",
        "--num-envs-per-env-runner", "2", "--timesteps", "512", "--train-batch-size", "512", "--hidden", "8",
        "--validation", "0", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "agents.training.rllib", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "512 env steps on 1 env runners × 2 envs" in done.stdout
    assert isinstance(load_policy(tmp_path / "policy"), RLlibPolicy)
    # The cluster outlives the job.
    assert ray_local.is_initialized() and ray_local.cluster_resources().get("CPU") == 2
