"""``routing-env train`` → the saved policy → routing prompts (in process and over HTTP), and ``routing-env
evaluate`` on the held-out split, on other logs and on bandit logs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from agents.cli import main
from agents.cli.evaluate import dense_grid
from routing_env.data import LoggedDataset, load_sample
from routing_env.policy import load_policy
from tests.agents.routers.bandit_logs import bandit_logs

CANDIDATES = ["--candidates", "task-table,linucb"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("train") / "policy"
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["train", "sample", "--out", str(out), *CANDIDATES, "--quiet"])
    assert code == 0
    return out, buffer.getvalue()


def test_train_prints_the_cv_table_and_the_test_figures(trained: tuple[Path, str]) -> None:
    out, stdout = trained
    assert "cross-validation on the training split (5 grouped folds, AIQ)" in stdout
    assert "task-table" in stdout and "linucb" in stdout and "chosen:" in stdout
    assert "ensemble" in stdout and " ± " in stdout  # the average, and each shortfall from the best CV score
    assert "gap_closed" in stdout and "on the test split" in stdout
    for name in ("policy.json", "arrays.npz", "training.json", "cv_table.csv", "test_plot.png", "featurizer"):
        assert (out / name).exists(), name
    record = json.loads((out / "training.json").read_text())
    assert record["logs"] == "sample" and record["n_train"] + record["n_test"] == 4000
    assert record["metric"] == "aiq" and len(record["cost_weights"]) == 17
    assert np.isfinite(record["test"]["gap_closed"])
    assert "7 text-residual columns" in record["features"]
    assert load_policy(out).featurizer.feature_names[-1] == "text_residual:frontier-reasoning"


def test_text_residual_off_keeps_the_featurizer_columns(tmp_path: Path) -> None:
    data = load_sample().select(np.arange(600))
    path = data.save(tmp_path / "logs.parquet")
    out = tmp_path / "off"
    args = ["--router", "task-table", "--text-residual", "off", "--quiet"]
    assert main(["train", str(path), "--out", str(out), *args]) == 0
    record = json.loads((out / "training.json").read_text())
    assert "text-residual" not in record["features"]
    names = load_policy(out).featurizer.feature_names
    assert not any(n.startswith("text_residual:") for n in names) and len(names) == 64 + 1 + 5


def test_the_saved_policy_routes_prompts_in_process_and_over_http(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from agents.online import OnlineRouter, SQLiteDecisionStore, create_app

    out, _ = trained
    policy = load_policy(out)
    assert policy.featurizer is not None
    router = OnlineRouter(policy, SQLiteDecisionStore(tmp_path / "d.db"))
    decision = router.route(prompt="prove that the sum of two even integers is even")
    assert decision.model in policy.models
    with TestClient(create_app(router), raise_server_exceptions=False) as client:
        r = client.post("/v1/route", json={"prompt": "write a python function that reverses a list"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] in policy.models


def test_evaluate_scores_the_held_out_split_by_default(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = trained
    plot, csv = tmp_path / "e.png", tmp_path / "e.csv"
    assert main(["evaluate", "sample", "--policy", str(out), "--plot", str(plot), "--csv", str(csv)]) == 0
    stdout = capsys.readouterr().out
    assert "scoring the held-out split of the training run: 1000 queries" in stdout
    assert plot.stat().st_size > 1000 and len(csv.read_text().splitlines()) > 10
    # The same split, the same figures as the training run printed.
    record = json.loads((out / "training.json").read_text())
    assert f"{record['test']['gap_closed']:.4g}" in stdout
    assert main(["evaluate", "sample", "--policy", str(out), "--rows", "all", "--plot", str(plot)]) == 0
    assert "held-out split" not in capsys.readouterr().out


def test_evaluate_reports_off_policy_estimates_on_bandit_logs(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = trained
    ds = load_sample().select(np.arange(600))
    rng = np.random.default_rng(0)
    logged = rng.integers(ds.n_models, size=ds.n_queries)
    logs = bandit_logs(ds, logged, np.full(ds.n_queries, 1.0 / ds.n_models))
    path = logs.save(tmp_path / "bandit.parquet")
    assert main(["evaluate", str(path), "--policy", str(out), "--cost-weight", "0.2"]) == 0
    stdout = capsys.readouterr().out
    assert "off-policy estimates at λ=0.2" in stdout and "SNIPS" in stdout


def test_train_one_family_at_one_cost_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_sample().select(np.arange(800))
    path = data.save(tmp_path / "logs.parquet")
    out = tmp_path / "cluster"
    assert (
        main(
            ["train", str(path), "--out", str(out), "--router", "cluster", "--cost-weight", "0.3", "--quiet"]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "mean reward" in stdout and "cluster" in stdout
    record = json.loads((out / "training.json").read_text())
    assert record["cost_weights"] == [0.3] and record["metric"] == "mean_reward"
    assert load_policy(out).cost_weight == 0.3


def test_train_and_evaluate_refuse_bad_requests(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = trained
    assert main(["train", "sample", "--out", str(out), "--quiet"]) == 2
    assert "already holds a policy; pass --force" in capsys.readouterr().err
    assert main(["train", "sample", "--out", str(tmp_path / "x"), "--test-size", "1.5"]) == 2
    assert "--test-size must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["train", "sample", "--out", str(tmp_path / "x"), "--cost-weight-range", "2", "1"]) == 2
    assert "--cost-weight-range needs 0 ≤ LO < HI" in capsys.readouterr().err
    assert main(["train", "sample", "--out", str(tmp_path / "x"), "--candidates", "nope", "--quiet"]) == 2
    assert "unknown router 'nope'" in capsys.readouterr().err
    narrow = load_sample().select(np.arange(50))
    bare = LoggedDataset(
        models=narrow.models, query_ids=narrow.query_ids, quality=narrow.quality, cost=narrow.cost
    )
    path = bare.save(tmp_path / "bare.parquet")
    assert main(["evaluate", str(path), "--policy", str(out)]) == 2
    # 64 text + length + 5 tasks, then one text-residual column per model (7).
    assert "derives its 77 features from prompts, but the logs have no prompts" in capsys.readouterr().err
    other = narrow.subset_models(narrow.models[:3])
    path = other.save(tmp_path / "other.parquet")
    assert main(["evaluate", str(path), "--policy", str(out)]) == 2
    assert "the logs have no outcomes of" in capsys.readouterr().err


def test_helpers() -> None:
    grid = dense_grid((0.0, 0.01, 1.0), points=5)
    assert (
        grid[0] == 0.0
        and grid[1] == pytest.approx(0.01)
        and grid[-1] == pytest.approx(1.0)
        and len(grid) == 6
    )
    assert dense_grid((0.3,)) == (0.3,)


@pytest.mark.parametrize("router", ["linucb", "cluster"])
def test_each_family_trained_from_the_cli_serves_prompts(router: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from agents.online import OnlineRouter, SQLiteDecisionStore, create_app

    path = load_sample().select(np.arange(600)).save(tmp_path / "logs.parquet")
    out = tmp_path / router
    assert main(["train", str(path), "--out", str(out), "--router", router, "--quiet"]) == 0
    policy = load_policy(out)
    assert type(policy).__name__ in ("LinUCB", "ClusterRouter", "GuardedRouter")
    with TestClient(create_app(OnlineRouter(policy, SQLiteDecisionStore(tmp_path / "d.db")))) as client:
        r = client.post("/v1/route", json={"prompt": "summarise this email in a friendly tone"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] in policy.models


@pytest.mark.slow
@pytest.mark.datasets
def test_train_on_llmrouter_and_evaluate_on_its_test_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import shared_dataset

    folder = str(shared_dataset("llmrouter"))
    out = tmp_path / "llmrouter"
    args = ["--format", "llmrouter", "--candidates", "task-table,linucb", "--quiet"]
    assert main(["train", folder, "--out", str(out), "--split", "train", *args]) == 0
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            folder,
            "--policy",
            str(out),
            "--format",
            "llmrouter",
            "--split",
            "test",
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    # Another file than the training run's: every row of it is scored.
    assert "held-out split" not in stdout and "gap_closed" in stdout


def test_auto_keeps_per_query_costs_where_they_pay_and_serves_them(tmp_path: Path) -> None:
    """Logs whose cost follows the prompt's length: `train` keeps a candidate with the cost model's costs, the saved
    policy carries the featurizer and the cost model, and `serve` routes a bare prompt with them."""
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from agents.online import OnlineRouter, SQLiteDecisionStore, create_app
    from agents.routers import EnsembleRouter
    from tests.agents.routers.test_cost import priced_logs, without_features

    path = without_features(priced_logs(n=900, seed=3, noise=0.05)).save(tmp_path / "priced.parquet")
    out = tmp_path / "auto"
    args = ["--candidates", "task-table,cluster", "--cost-weight-range", "0", "3", "--quiet"]
    assert main(["train", str(path), "--out", str(out), *args]) == 0
    policy = load_policy(out)
    inner = getattr(policy, "router", policy)
    assert isinstance(inner, EnsembleRouter) and inner.cost_model is not None
    policy.cost_weight = (
        1.0  # a λ where price matters (the policy serves the smallest of its grid until told)
    )
    with TestClient(create_app(OnlineRouter(policy, SQLiteDecisionStore(tmp_path / "d.db")))) as client:
        short = client.post("/v1/route", json={"prompt": "alpha beta"})
        long = client.post("/v1/route", json={"prompt": "alpha beta " * 800})
        assert short.status_code == long.status_code == 200, (short.text, long.text)
    # The same request priced by its length: a long prompt is not routed to a dearer model than a short one.
    order = {m: i for i, m in enumerate(policy.models)}
    assert order[long.json()["model"]] < order[short.json()["model"]], (short.json(), long.json())
