"""agents.training.sb3_networks: the λ-interaction input layer, the actor's linear skip path, and rebuilding either
from a saved policy (older saves without them included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.training.ppo import PPOConfig, train_ppo
from agents.training.sb3_env import CostWeightInput
from agents.training.sb3_networks import (
    CostWeightInteractions,
    SkipMlpExtractor,
    build_sb3_policy,
    has_skip,
    set_linear_actor,
)
from agents.training.sb3_policy import SB3Policy
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, PolicyFormatError
from routing_env.policy import load_policy

TINY = PPOConfig(n_steps=64, batch_size=128, n_epochs=2, net_arch=(16,))


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=300, models=3, n_features=4, seed=2)


def _interactions(high: float = 3.0) -> CostWeightInteractions:
    lam_input = CostWeightInput.for_range(0.0, high)
    network = build_sb3_policy(
        "PPO", 5, 3, (8,), "tanh", CostWeightInteractions.kwargs_for(lam_input, high), skip=True
    )
    extractor = network.features_extractor
    assert isinstance(extractor, CostWeightInteractions)
    return extractor


@settings(max_examples=40, deadline=None)
@given(
    lam=st.floats(0.0, 3.0),
    x=st.lists(st.floats(-5.0, 5.0), min_size=4, max_size=4),
)
def test_interactions_recover_lambda_and_represent_a_bilinear_reward(lam: float, x: list[float]) -> None:
    extractor = _interactions()
    lam_input = CostWeightInput.for_range(0.0, 3.0)
    obs = torch.as_tensor(np.array([[*x, float(lam_input(lam))]], dtype=np.float32))
    out = extractor(obs).double().numpy()[0]
    assert out.shape == (2 * 4 + 2,)
    w = out[5]
    assert w == pytest.approx(lam / 3.0, abs=1e-5)
    np.testing.assert_allclose(out[6:], w * np.asarray(x), atol=1e-4)
    # A linear map of the layer's output scores base·x + b0 − λ·(per·x + p0) at every λ.
    rng = np.random.default_rng(0)
    base, per = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    b0, p0 = rng.normal(size=3), rng.normal(size=3)
    weight, bias = extractor.linear_weights(base, b0, per, p0)
    expected = base @ np.asarray(x) + b0 - lam * (per @ np.asarray(x) + p0)
    np.testing.assert_allclose(weight @ out + bias, expected, atol=1e-3)


def test_the_skip_path_makes_the_logits_exactly_linear() -> None:
    network = build_sb3_policy("PPO", 4, 3, (16, 16), "tanh", skip=True)
    assert has_skip(network) and isinstance(network.mlp_extractor, SkipMlpExtractor)
    weight, bias = np.arange(12.0).reshape(3, 4) / 10.0, np.array([0.1, -0.2, 0.3])
    set_linear_actor(network, weight, bias)
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(5, 4)), dtype=torch.float32)
    logits = network.get_distribution(x).distribution.logits  # type: ignore[union-attr]
    expected = x.numpy() @ weight.T + bias
    # Categorical logits are normalised: compare them up to a per-row constant.
    got = logits.detach().numpy()
    np.testing.assert_allclose(got - got[:, :1], expected - expected[:, :1], atol=1e-5)
    plain = build_sb3_policy("PPO", 4, 3, (16,), "tanh")
    assert not has_skip(plain)
    with pytest.raises(ValueError, match="needs an actor with the linear skip path"):
        set_linear_actor(plain, weight, bias)
    with pytest.raises(ValueError, match=r"weight must be \(3, 4\)"):
        set_linear_actor(network, weight[:, :2], bias)
    masked = build_sb3_policy("MaskablePPO", 4, 3, (16,), "tanh", skip=True)
    assert has_skip(masked)


def test_a_conditioned_policy_saves_and_loads_its_input_layer_and_skip_path(
    data: LoggedDataset, tmp_path: Path
) -> None:
    result = train_ppo(data, cost_weight_range=(0.0, 2.0), total_timesteps=256, n_envs=2, seed=0, ppo=TINY)
    policy = result.policy
    assert policy is not None and policy.interactions is not None and has_skip(policy.network)
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, SB3Policy) and has_skip(loaded.network)
    assert isinstance(loaded.network.features_extractor, CostWeightInteractions)
    for lam in (0.0, 0.7, 2.0):
        np.testing.assert_allclose(
            loaded.with_cost_weight(lam).action_probabilities(data.features),
            policy.with_cost_weight(lam).action_probabilities(data.features),
            rtol=1e-6,
        )
    doc = json.loads((tmp_path / "p" / "policy.json").read_text())
    doc["config"]["interactions"] = {"offset": 1.0}
    (tmp_path / "p" / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFormatError, match=r"interactions .* are malformed"):
        SB3Policy.load(tmp_path / "p")


def test_a_policy_saved_before_the_skip_path_existed_loads(data: LoggedDataset, tmp_path: Path) -> None:
    plain = PPOConfig(n_steps=64, batch_size=128, n_epochs=2, net_arch=(16,), linear_skip=False)
    result = train_ppo(
        data,
        cost_weight_range=(0.0, 2.0),
        total_timesteps=256,
        n_envs=2,
        ppo=plain,
        cost_weight_interactions=False,
    )
    policy = result.policy
    assert policy is not None and policy.interactions is None and not has_skip(policy.network)
    policy.save(tmp_path / "p")
    doc = json.loads((tmp_path / "p" / "policy.json").read_text())
    del doc["config"]["skip"], doc["config"]["interactions"]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(doc))
    loaded = SB3Policy.load(tmp_path / "p")
    assert not has_skip(loaded.network) and loaded.interactions is None
    np.testing.assert_allclose(
        loaded.action_probabilities(data.features), policy.action_probabilities(data.features), rtol=1e-6
    )


def test_interactions_need_a_conditioned_policy(data: LoggedDataset) -> None:
    result = train_ppo(data, 0.5, total_timesteps=128, n_envs=2, ppo=TINY, validation=None)
    policy = result.policy
    assert policy is not None and policy.interactions is None
    settings = {"offset": 0.0, "center": 0.0, "scale": 1.0, "high": 1.0}
    network = build_sb3_policy("PPO", 5, 3, (8,), "tanh", settings)
    # Five unconditioned features fit the network's width, but its input layer reads the last one as λ.
    with pytest.raises(ConfigurationError, match="reads λ interactions, which need a λ-conditioned policy"):
        SB3Policy(network, data.models, np.zeros(5), np.ones(5))
    assert SB3Policy(network, data.models, np.zeros(4), np.ones(4), conditioned=True).interactions == settings
