"""The Open Bandit Dataset sample through BanditFeedback: positions, uniform logs, floored BTS propensities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from routing_env.data import load_open_bandit
from routing_env.errors import DataWarning, OPEWarning
from routing_env.ope import BanditFeedback, estimate_policy_value
from tests.conftest import shared_dataset

pytestmark = pytest.mark.datasets


def test_random_logs_estimate_a_slate_policy() -> None:
    folder = shared_dataset("obd-small")
    ds = load_open_bandit(folder, policy="random", campaign="men")
    fb = BanditFeedback.from_dataset(ds, position_feature="position")
    assert fb.n_positions == 3 and set(np.unique(fb.position)) == {0, 1, 2}
    k = fb.n_actions
    # The uniform slate policy: its value is the logged click rate, and IPS reproduces it exactly.
    uniform = np.full((fb.n_rounds, k, 3), 1.0 / k)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OPEWarning)
        table = estimate_policy_value(uniform, fb, ["IPS", "SNIPS", "Replay"], n_bootstrap=100).set_index(
            "estimator"
        )
    assert table.loc["IPS", "estimate"] == pytest.approx(fb.quality.mean(), rel=1e-9)
    assert table.loc["Replay", "estimate"] == pytest.approx(table.loc["SNIPS", "estimate"])


def test_bts_logs_with_floored_propensities_warn() -> None:
    folder = shared_dataset("obd-small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = load_open_bandit(folder, policy="bts", campaign="women")
    fb = BanditFeedback.from_dataset(ds, position_feature="position")
    assert fb.propensity.min() > 0
    counts = np.zeros((fb.n_actions, 3))
    np.add.at(counts, (fb.action, fb.position), 1.0)
    dist = np.broadcast_to((counts / counts.sum(axis=0))[None], (fb.n_rounds, fb.n_actions, 3))
    with pytest.warns(OPEWarning) as record:
        table = estimate_policy_value(np.ascontiguousarray(dist), fb, ["IPS", "SNIPS"], n_bootstrap=0)
    messages = " | ".join(str(w.message) for w in record)
    # Floored propensities (1e-6) give weights in the thousands, so a few rounds carry IPS.
    assert "have a propensity below 0.0001" in messages and "small effective sample size" in messages
    assert np.isfinite(table["estimate"]).all()
