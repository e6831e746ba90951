"""``routing-env ope`` on a saved policy and saved bandit logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.cli import main
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.ope import BanditFeedback, estimate_policy_value, simulate_bandit_feedback
from tests.ope.ope_policies import random_linear


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BanditFeedback]:
    root = tmp_path_factory.mktemp("ope_cli")
    data = make_synthetic(n_queries=800, models=3, n_features=4, seed=2)
    logger = random_linear(data.models, data.n_features, seed=0, temperature=3.0, epsilon=0.3)
    fb = simulate_bandit_feedback(data, logger, seed=0)
    log_path = fb.to_dataset().save(root / "logs.parquet")
    target = random_linear(data.models, data.n_features, seed=4)
    policy_path = target.save(root / "policy")
    return log_path, policy_path, fb


def test_cli_prints_the_table_and_writes_csv(
    saved: tuple[Path, Path, BanditFeedback], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path, policy_path, _ = saved
    out_csv = tmp_path / "table.csv"
    code = main(
        [
            "ope",
            "--log",
            str(log_path),
            "--policy",
            str(policy_path),
            "--cost-weight",
            "0.5",
            "--estimators",
            "IPS,SNIPS,DR",
            "--n-bootstrap",
            "50",
            "--csv",
            str(out_csv),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "LinearSoftmaxPolicy" in out and "SNIPS" in out and "diagnostics: ESS" in out
    table = pd.read_csv(out_csv)
    assert list(table["estimator"]) == ["IPS", "SNIPS", "DR"]
    # The CLI's numbers are the library's on the same logs read back from disk.
    logs = LoggedDataset.read(log_path)
    again = BanditFeedback.from_dataset(logs, cost_weight=0.5)
    from routing_env.policy import load_policy

    expected = estimate_policy_value(load_policy(policy_path), again, ["IPS", "SNIPS", "DR"], n_bootstrap=50)
    np.testing.assert_allclose(table["estimate"], expected["estimate"])
    np.testing.assert_allclose(table["boot_ci_low"], expected["boot_ci_low"])


def test_cli_errors_are_reported(
    saved: tuple[Path, Path, BanditFeedback], capsys: pytest.CaptureFixture[str]
) -> None:
    log_path, policy_path, _ = saved
    assert main(["ope", "--log", str(log_path), "--policy", str(policy_path), "--estimators", "XYZ"]) == 2
    assert "unknown estimator 'XYZ'" in capsys.readouterr().err
    assert main(["ope", "--log", "sample", "--policy", str(policy_path)]) == 2
    assert "needs bandit logs" in capsys.readouterr().err
    assert main(["ope", "--log", str(log_path), "--policy", str(log_path.parent / "nope")]) == 2
    assert "not a saved policy" in capsys.readouterr().err
    code = main(["ope", "--log", str(log_path), "--policy", str(policy_path), "--cost-scale", "cheap"])
    assert code == 2 and "--cost-scale must be 'max_mean' or a positive number" in capsys.readouterr().err


def test_cli_with_a_saved_agents_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.routers import BestSingleModel

    data = make_synthetic(n_queries=600, models=3, n_features=4, seed=5)
    router = BestSingleModel().fit(data, cost_weight=0.0)
    policy_path = router.save(tmp_path / "best")
    fb = simulate_bandit_feedback(data, np.full((data.n_queries, 3), 1 / 3), seed=1)
    log_path = fb.to_dataset().save(tmp_path / "logs.csv")
    code = main(["ope", "--log", str(log_path), "--policy", str(policy_path), "--estimators", "Replay,IPS"])
    assert code == 0
    out = capsys.readouterr().out
    assert "BestSingleModel" in out and "Replay" in out
    # Replay on uniform logs = mean quality of the rounds where the chosen model was logged.
    kept = fb.action == router.choice_
    assert f"{fb.quality[kept].mean():.4g}" in out
