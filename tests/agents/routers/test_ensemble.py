"""``EnsembleRouter``: routing on the weighted mean of its members' estimates, its checks, models coming and
going in every member, and the no-pickle round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.routers import ClusterRouter, LinUCB, TaskTableRouter
from agents.routers.baselines import BestSingleModel
from agents.routers.ensemble import EnsembleRouter, outcome_estimates
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError
from routing_env.policy import load_policy
from tests.agents.routers.test_tables import with_task_columns


@pytest.fixture(scope="module")
def tasked() -> LoggedDataset:
    return with_task_columns(make_synthetic(n_queries=400, models=4, n_features=5, seed=3))


@pytest.fixture(scope="module")
def members(tasked: LoggedDataset) -> tuple[TaskTableRouter, LinUCB]:
    return TaskTableRouter().fit(tasked, cost_weight=0.2), LinUCB(seed=1).fit(tasked, cost_weight=0.2)


def test_routes_on_the_weighted_mean_of_the_members(tasked: LoggedDataset, members: tuple) -> None:
    x = np.asarray(tasked.features[:60], dtype=np.float64)
    (q1, c1), (q2, c2) = (outcome_estimates(m, x) for m in members)
    ensemble = EnsembleRouter(members, weights=(3.0, 1.0), cost_weight=0.4)
    assert ensemble.weights == (0.75, 0.25)  # normalised
    q, c = ensemble.predict_outcomes(x)
    np.testing.assert_allclose(q, 0.75 * q1 + 0.25 * q2)
    np.testing.assert_allclose(c, 0.75 * c1 + 0.25 * c2)
    scale = members[0].cost_scale_
    for lam in (0.0, 0.4, 5.0):
        probs = ensemble.action_probabilities(x, cost_weight=lam if lam != 0.4 else None)
        best = np.argmax(q - (lam / scale) * c, axis=1)
        np.testing.assert_array_equal(probs.argmax(axis=1), best)
    assert EnsembleRouter(members).chosen() == {"members": "TaskTableRouter+LinUCB", "weights": "equal"}


def test_refuses_members_it_cannot_average(tasked: LoggedDataset, members: tuple) -> None:
    with pytest.raises(ConfigurationError, match="at least one fitted member"):
        EnsembleRouter(())
    with pytest.raises(ConfigurationError, match="BestSingleModel does not"):
        EnsembleRouter((members[0], BestSingleModel().fit(tasked)))
    fewer = LinUCB(seed=1).fit(tasked.subset_models(tasked.models[:-1]))
    with pytest.raises(ModelMismatchError, match="same models"):
        EnsembleRouter((members[0], fewer))
    with pytest.raises(ConfigurationError, match="2 finite numbers"):
        EnsembleRouter(members, weights=(1.0, -1.0))
    with pytest.raises(ConfigurationError, match="one per member"):
        EnsembleRouter(members, weights=("a", 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cost_weight"):
        EnsembleRouter(members, cost_weight=-1.0)
    with pytest.raises(ConfigurationError, match="no predict_outcomes"):
        outcome_estimates(BestSingleModel().fit(tasked), np.zeros((1, tasked.n_features)))


def test_models_join_and_leave_every_member(tasked: LoggedDataset) -> None:
    head = tasked.subset_models(tasked.models[:-1])
    parts = (TaskTableRouter().fit(head), ClusterRouter(n_clusters=3, seed=1).fit(head))
    ensemble = EnsembleRouter(parts)
    ensemble.add_model(tasked.models[-1], tasked.select(np.arange(150)))
    assert ensemble.models == tasked.models and all(m.models == tasked.models for m in ensemble.members)
    assert all(m.models == head.models for m in parts)  # the routers given are left as they were
    assert ensemble.action_probabilities(np.asarray(tasked.features[:5])).shape == (5, tasked.n_models)
    ensemble.remove_model(tasked.models[0])
    assert ensemble.models == tasked.models[1:]
    with pytest.raises(ConfigurationError, match="LinUCB does not"):
        EnsembleRouter((parts[0], LinUCB(seed=1).fit(head))).add_model("x", tasked)


def test_save_and_load_round_trip(tmp_path: Path, tasked: LoggedDataset, members: tuple) -> None:
    ensemble = EnsembleRouter(members, weights=(1.0, 2.0), cost_weight=0.3, seed=4)
    ensemble.save(tmp_path / "ens")
    assert (tmp_path / "ens" / "members" / "1" / "policy.json").exists()
    loaded = load_policy(tmp_path / "ens")
    assert isinstance(loaded, EnsembleRouter)
    x = np.asarray(tasked.features[:40], dtype=np.float64)
    np.testing.assert_allclose(loaded.action_probabilities(x), ensemble.action_probabilities(x))
    np.testing.assert_array_equal(loaded.act(x)[0], ensemble.act(x)[0])
    assert loaded.weights == ensemble.weights and loaded.cost_weight == 0.3
