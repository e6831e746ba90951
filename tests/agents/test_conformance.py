"""One conformance tester for every policy of the project (``routing_env.policy`` protocols).

Every routing policy in :data:`POLICY_CASES` goes through the same checks: shapes and probabilities of
``action_probabilities``, ``act`` (shapes, propensities equal to the probabilities of the chosen models, single
rows), seeding (same seed → same actions), the no-pickle save/load round trip through
``routing_env.policy.load_policy`` (same probabilities, same future draws), and refusal of features of another
width and of a dataset over another model list. Cascade policies in :data:`CASCADE_CASES` get the analogous
checks of the ``CascadePolicy`` protocol.

To add a policy, append one :class:`PolicyCase` (a name and a factory taking the training dataset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.routers import (
    BestSingleModel,
    Cheapest,
    ClusterRouter,
    EpsilonGreedy,
    FixedModel,
    KNNRouter,
    LinearThompsonSampling,
    LinUCB,
    LogisticRouter,
    MatrixFactorizationRouter,
    MLPRouter,
    Oracle,
    RandomRouter,
    SoftmaxBandit,
    TaskTableRouter,
    ThresholdCascade,
)
from agents.routers.cascades import CascadeBandit
from agents.routers.cost import CostModel
from agents.routers.ensemble import EnsembleRouter
from agents.routers.selection import GuardedRouter
from routing_env.data import LoggedDataset, TaskOneHot, make_synthetic
from routing_env.errors import ModelMismatchError, ShapeError
from routing_env.metrics import evaluate_policy
from routing_env.policy import CascadePolicy, LearningPolicy, Policy, load_policy


@dataclass(frozen=True)
class PolicyCase:
    """A policy under test.

    Attributes:
        name: test id.
        make: builds a ready policy from the training dataset (same call, same seed → same policy).
        prob_atol: tolerance between ``act``'s propensities and ``action_probabilities`` (numerical rules).
        needs_training_rows: the policy only routes the queries it was fitted on (the oracle).
    """

    name: str
    make: Callable[[LoggedDataset], Any]
    prob_atol: float = 1e-12
    needs_training_rows: bool = False


def _online(cls: type, **kw: Any) -> Callable[[LoggedDataset], Any]:
    """A bandit that learned online (reward-only) from a few rounds of its own choices."""

    def make(ds: LoggedDataset) -> Any:
        policy = cls(models=ds.models, seed=3, **kw)
        rewards = ds.rewards(0.2)
        for i in range(40):
            a, _ = policy.act(ds.features[i])
            policy.update(ds.features[i], a, rewards[i, a])
        return policy

    return make


def _onboarded(ds: LoggedDataset) -> ClusterRouter:
    """A clustering router fitted without the last model, which then joins from 100 labelled queries."""
    router = ClusterRouter(n_clusters=3, seed=1).fit(ds.subset_models(ds.models[:-1]), cost_weight=0.2)
    return router.add_model(ds.models[-1], ds.select(np.arange(100)))


def _guarded(ds: LoggedDataset) -> GuardedRouter:
    """A bandit that defers to the best single model from λ = 0.5 on."""
    inner = LinUCB(seed=1).fit(ds, cost_weight=0.6)
    return GuardedRouter(
        inner, (0.0, 0.5), (False, True), ds.quality.mean(axis=0), ds.cost.mean(axis=0), seed=2
    )


POLICY_CASES: list[PolicyCase] = [
    PolicyCase("LinUCB-fit", lambda ds: LinUCB(alpha=0.5, seed=1).fit(ds, cost_weight=0.2)),
    PolicyCase("LinUCB-eps-online", _online(LinUCB, alpha=0.5, epsilon=0.2)),
    PolicyCase(
        "LinearThompsonSampling-fit",
        lambda ds: LinearThompsonSampling(posterior_scale=0.5, seed=1).fit(ds, cost_weight=0.2),
        prob_atol=5e-3,
    ),
    PolicyCase(
        "LinearThompsonSampling-online", _online(LinearThompsonSampling, posterior_scale=1.0), prob_atol=5e-3
    ),
    PolicyCase("EpsilonGreedy-fit", lambda ds: EpsilonGreedy(epsilon=0.1, seed=1).fit(ds, cost_weight=0.2)),
    PolicyCase("EpsilonGreedy-online", _online(EpsilonGreedy, epsilon=0.3)),
    PolicyCase(
        "SoftmaxBandit-fit", lambda ds: SoftmaxBandit(temperature=0.1, seed=1).fit(ds, cost_weight=0.2)
    ),
    PolicyCase("RandomRouter", lambda ds: RandomRouter(seed=1).fit(ds)),
    PolicyCase("FixedModel", lambda ds: FixedModel(model=ds.models[1]).fit(ds)),
    PolicyCase("Cheapest", lambda ds: Cheapest().fit(ds)),
    PolicyCase("BestSingleModel", lambda ds: BestSingleModel(cost_weight=0.3).fit(ds)),
    PolicyCase("Oracle", lambda ds: Oracle(cost_weight=0.3).fit(ds), needs_training_rows=True),
    PolicyCase("KNNRouter", lambda ds: KNNRouter(n_neighbors=5, weights="distance").fit(ds, cost_weight=0.3)),
    PolicyCase("MLPRouter", lambda ds: MLPRouter(hidden_layer_sizes=(16,), max_iter=50, seed=2).fit(ds, 0.3)),
    PolicyCase("LogisticRouter", lambda ds: LogisticRouter(C=0.5).fit(ds, cost_weight=0.3)),
    PolicyCase("KNNRouter-tuned", lambda ds: KNNRouter(seed=1).fit(ds, cost_weight=0.3)),
    PolicyCase("TaskTableRouter", lambda ds: TaskTableRouter().fit(ds, cost_weight=0.3)),
    PolicyCase("ClusterRouter", lambda ds: ClusterRouter(seed=1).fit(ds, cost_weight=0.3)),
    PolicyCase(
        "ClusterRouter-residual",
        lambda ds: ClusterRouter(n_clusters=3, residual=True, seed=1).fit(ds, cost_weight=0.3),
    ),
    PolicyCase("ClusterRouter-onboarded", _onboarded),
    PolicyCase("GuardedRouter", _guarded),
    PolicyCase(
        "EnsembleRouter",
        lambda ds: EnsembleRouter(
            (TaskTableRouter().fit(ds, cost_weight=0.3), LinUCB(seed=1).fit(ds, cost_weight=0.3)), seed=2
        ),
    ),
    PolicyCase(
        "EnsembleRouter-cost-model",
        lambda ds: EnsembleRouter(
            (ClusterRouter(n_clusters=3, seed=1).fit(ds, cost_weight=0.3),),
            seed=2,
            cost_model=CostModel(cv=3).fit(ds),
        ),
    ),
    PolicyCase(
        "MatrixFactorizationRouter",
        lambda ds: MatrixFactorizationRouter(strong=ds.models[-1], weak=ds.models[0], epochs=60, seed=2).fit(
            ds
        ),
    ),
]


_SB3_CACHE: dict[int, Any] = {}


def _sb3_policy(ds: LoggedDataset) -> Any:
    """A tiny PPO router, trained once per dataset; each call returns a fresh copy (same seed, same draws)."""
    from agents.training.ppo import PPOConfig, train_ppo

    if id(ds) not in _SB3_CACHE:
        config = PPOConfig(n_steps=64, batch_size=128, n_epochs=2, net_arch=(16,))
        _SB3_CACHE[id(ds)] = train_ppo(
            ds, 0.3, total_timesteps=256, n_envs=2, seed=3, config=config, validation=None
        ).policy
    policy = _SB3_CACHE[id(ds)]
    return policy.with_cost_weight(policy.cost_weight)


POLICY_CASES.append(PolicyCase("SB3Policy-PPO", _sb3_policy, prob_atol=1e-9))


@pytest.fixture(scope="module")
def train() -> LoggedDataset:
    """Synthetic logs whose features end with the task one-hot, as ``QueryFeaturizer`` writes them."""
    ds = make_synthetic(n_queries=240, models=4, n_features=6, seed=5)
    enc = TaskOneHot().fit(list(ds.tasks))
    x = np.hstack([np.asarray(ds.features), enc.transform(list(ds.tasks))])
    return ds.with_features(x, names=[*ds.feature_names, *enc.feature_names])


@pytest.fixture(scope="module")
def other_models(train: LoggedDataset) -> LoggedDataset:
    """The same queries over a different model list (one model fewer)."""
    return train.subset_models(train.models[:-1])


def _query_rows(case: PolicyCase, train: LoggedDataset) -> np.ndarray:
    if case.needs_training_rows:
        return np.asarray(train.features[:50], dtype=np.float64)
    return np.random.default_rng(0).normal(size=(50, train.n_features))


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda c: c.name)
class TestPolicyConformance:
    def test_protocol_and_probabilities(self, case: PolicyCase, train: LoggedDataset) -> None:
        policy = case.make(train)
        assert isinstance(policy, Policy)
        assert tuple(policy.models) == train.models
        x = _query_rows(case, train)
        probs = policy.action_probabilities(x)
        assert probs.shape == (x.shape[0], train.n_models)
        assert probs.dtype == np.float64
        assert np.isfinite(probs).all() and (probs >= 0).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        # float32 features, as datasets hold them, are accepted too.
        np.testing.assert_allclose(policy.action_probabilities(x.astype(np.float32)), probs, atol=1e-5)

    def test_act_shapes_and_propensities(self, case: PolicyCase, train: LoggedDataset) -> None:
        policy = case.make(train)
        if not hasattr(policy, "act"):
            pytest.skip("not a LearningPolicy")
        x = _query_rows(case, train)
        probs = policy.action_probabilities(x)
        actions, props = policy.act(x)
        assert actions.shape == (x.shape[0],) and actions.dtype == np.int64
        assert props.shape == (x.shape[0],) and props.dtype == np.float64
        assert ((actions >= 0) & (actions < train.n_models)).all()
        assert ((props > 0) & (props <= 1)).all()
        np.testing.assert_allclose(props, probs[np.arange(len(actions)), actions], atol=case.prob_atol)
        a1, p1 = policy.act(x[0])
        assert a1.shape == (1,) and p1.shape == (1,)
        np.testing.assert_allclose(p1[0], policy.action_probabilities(x[:1])[0, a1[0]], atol=case.prob_atol)

    def test_seeding(self, case: PolicyCase, train: LoggedDataset) -> None:
        a, b = case.make(train), case.make(train)
        if not hasattr(a, "act"):
            pytest.skip("not a LearningPolicy")
        x = _query_rows(case, train)
        for _ in range(3):
            np.testing.assert_array_equal(a.act(x)[0], b.act(x)[0])
            for row in x[:10]:
                assert a.act(row)[0][0] == b.act(row)[0][0]

    def test_save_load_round_trip(self, case: PolicyCase, train: LoggedDataset, tmp_path: Path) -> None:
        policy = case.make(train)
        x = _query_rows(case, train)
        policy.save(tmp_path / "p")
        loaded = load_policy(tmp_path / "p")
        assert type(loaded) is type(policy)
        assert tuple(loaded.models) == tuple(policy.models)
        np.testing.assert_array_equal(loaded.action_probabilities(x), policy.action_probabilities(x))
        if hasattr(policy, "act"):
            # The generator state is saved too: the next draws are the same.
            np.testing.assert_array_equal(loaded.act(x)[0], policy.act(x)[0])
        if isinstance(policy, LearningPolicy) and hasattr(policy, "update"):
            a, _ = policy.act(x[:5])
            r = np.linspace(0.0, 1.0, 5)
            update = "update_outcomes" if getattr(policy, "mode", "") == "outcomes" else "update"
            args = (a, r, r * 0.01) if update == "update_outcomes" else (a, r)
            getattr(policy, update)(x[:5], *args)
            getattr(loaded, update)(x[:5], *args)
            np.testing.assert_array_equal(loaded.action_probabilities(x), policy.action_probabilities(x))

    def test_refuses_wrong_width(self, case: PolicyCase, train: LoggedDataset, tmp_path: Path) -> None:
        policy = case.make(train)
        if getattr(policy, "n_features", None) is None:
            pytest.skip("ignores the features (accepts any width)")
        bad = np.zeros((3, train.n_features + 2))
        with pytest.raises(ShapeError, match=f"width {train.n_features + 2}"):
            policy.action_probabilities(bad)
        policy.save(tmp_path / "p")
        with pytest.raises(ShapeError, match=f"width {train.n_features}"):
            load_policy(tmp_path / "p").action_probabilities(bad)

    def test_refuses_other_models(
        self, case: PolicyCase, train: LoggedDataset, other_models: LoggedDataset, tmp_path: Path
    ) -> None:
        policy = case.make(train)
        policy.save(tmp_path / "p")
        for p in (policy, load_policy(tmp_path / "p")):
            with pytest.raises(ModelMismatchError, match="routes over models"):
                evaluate_policy(other_models, p)


# ---------------------------------------------------------------------------------------------- cascades
@dataclass(frozen=True)
class CascadeCase:
    name: str
    make: Callable[[LoggedDataset], Any]
    deterministic: bool = False


CASCADE_CASES: list[CascadeCase] = [
    CascadeCase("ThresholdCascade", lambda ds: ThresholdCascade(cost_weight=0.3).fit(ds), deterministic=True),
    CascadeCase(
        "CascadeBandit-linucb", lambda ds: CascadeBandit(alpha=0.5, epsilon=0.1, seed=4).fit(ds, 0.3)
    ),
    CascadeCase(
        "CascadeBandit-thompson", lambda ds: CascadeBandit(algorithm="thompson", seed=4).fit(ds, 0.3)
    ),
    CascadeCase(
        "CascadeBandit-egreedy",
        lambda ds: CascadeBandit(algorithm="egreedy", epsilon=0.2, seed=4).fit(ds, 0.3),
    ),
]


@pytest.mark.parametrize("case", CASCADE_CASES, ids=lambda c: c.name)
class TestCascadeConformance:
    def _inputs(self, train: LoggedDataset, s: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(1)
        return rng.normal(size=(40, train.n_features)), rng.random((40, s))

    def test_protocol_and_shapes(self, case: CascadeCase, train: LoggedDataset) -> None:
        policy = case.make(train)
        assert isinstance(policy, CascadePolicy)
        assert len(policy.chain) == train.n_models
        for s in range(1, len(policy.chain)):
            x, sig = self._inputs(train, s)
            p = policy.stop_probabilities(x, sig)
            assert p.shape == (40,) and ((p >= 0) & (p <= 1)).all()
            stop, prop = policy.decide(x, sig)
            assert stop.shape == (40,) and stop.dtype == bool and prop.shape == (40,)
            np.testing.assert_allclose(prop, np.where(stop, p, 1.0 - p), atol=5e-3)

    def test_seeding_and_round_trip(self, case: CascadeCase, train: LoggedDataset, tmp_path: Path) -> None:
        a, b = case.make(train), case.make(train)
        x, sig = self._inputs(train, 2)
        np.testing.assert_array_equal(a.decide(x, sig)[0], b.decide(x, sig)[0])
        a.save(tmp_path / "c")
        loaded = load_policy(tmp_path / "c")
        assert type(loaded) is type(a) and loaded.chain == a.chain
        np.testing.assert_array_equal(loaded.stop_probabilities(x, sig), a.stop_probabilities(x, sig))
        np.testing.assert_array_equal(loaded.decide(x, sig)[0], a.decide(x, sig)[0])

    def test_refuses_bad_inputs(self, case: CascadeCase, train: LoggedDataset) -> None:
        policy = case.make(train)
        x, sig = self._inputs(train, len(policy.chain))
        with pytest.raises(ShapeError, match="signals must hold"):
            policy.stop_probabilities(x, sig)
        with pytest.raises(ShapeError, match="signals must have shape"):
            policy.stop_probabilities(x, sig[:5, :1])
        if policy.n_features is not None:
            with pytest.raises(ShapeError, match="width"):
                policy.stop_probabilities(np.zeros((40, train.n_features + 1)), sig[:, :1])
