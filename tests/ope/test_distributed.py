"""Off-policy evaluation and scoring over sharded parquet logs with Ray Data, on a local 2-CPU Ray."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from routing_env.data import LoggedDataset, TextFeaturizer, featurize, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError, OPEWarning, SchemaError, ShapeError
from routing_env.ope import BanditFeedback, estimate_policy_value, simulate_bandit_feedback
from routing_env.ope.distributed import (
    distributed_estimated_rewards,
    estimate_policy_value_distributed,
    query_folds,
    read_logs,
    score_policy,
)
from tests.ope.ope_policies import ConstantPolicy, random_linear

#: Columns that must match the single-process table to 1e-9 (the bootstrap columns are checked for sanity).
EXACT = ["estimate", "std_error", "ci_low", "ci_high"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs for this module's tests (skipped without the ray extra), shut down after them."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'routing-env[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'routing-env[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    if started:
        ray.shutdown()


def on_ray(test: Callable[..., Any]) -> Callable[..., Any]:
    """A slow test that runs on the module's local Ray."""
    return pytest.mark.slow(pytest.mark.usefixtures("local_ray")(test))


def test_imports_without_ray_and_names_the_extra_when_used() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import routing_env.ope.distributed as d\n"
        "assert 'torch' not in sys.modules, 'imported torch'\n"
        "from routing_env.data.featurizers import MissingDependencyError\n"
        "try:\n"
        "    d.read_logs('logs.parquet')\n"
        "except MissingDependencyError as exc:\n"
        "    assert \"pip install 'routing-env[ray]'\" in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no error without ray')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def write_shards(dataset: LoggedDataset, folder: Path, n_files: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(dataset.n_queries), n_files)
    return [dataset.select(idx).save(folder / f"part-{i:02d}.parquet") for i, idx in enumerate(parts)]


@pytest.fixture(scope="module")
def full_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoggedDataset, Path]:
    """Full-information long logs (4 rows per query) where one row per query is the logged one, in 8 files."""
    ds = make_synthetic(n_queries=3000, models=4, n_features=5, seed=3)
    logger = random_linear(ds.models, 5, seed=1, temperature=2.0, epsilon=0.2)
    fb = simulate_bandit_feedback(ds, logger, seed=0)
    logged = dataclasses.replace(ds, logged_action=fb.action, propensity=fb.propensity)
    folder = tmp_path_factory.mktemp("full")
    write_shards(logged, folder, 8)
    return logged, folder


def assert_same_table(distributed: pd.DataFrame, local: pd.DataFrame) -> None:
    assert distributed["estimator"].tolist() == local["estimator"].tolist()
    for col in EXACT:
        np.testing.assert_allclose(distributed[col], local[col], rtol=0, atol=1e-9, err_msg=col)
    np.testing.assert_allclose(distributed["ess"], local["ess"], rtol=1e-9)
    assert (distributed["n_rounds"] == local["n_rounds"]).all()


@on_ray
def test_distributed_equals_local_on_eight_files(full_logs: tuple[LoggedDataset, Path]) -> None:
    logged, folder = full_logs
    target = random_linear(logged.models, 5, seed=2, temperature=1.0)
    # A sample smaller than the log (and, at first, fewer than it asks for: one logged row in four) makes the
    # sample pass raise its threshold once.
    table = estimate_policy_value_distributed(
        target, str(folder / "*.parquet"), cost_weight=0.5, sample_size=1000, batch_size=700, seed=4
    )
    run = table.attrs["distributed"]
    local_fb = BanditFeedback.from_dataset(logged, cost_weight=0.5)
    assert run.n_rounds == 3000 and run.sample_rows == 1000 and run.n_batches >= 8
    assert run.cost_scale == pytest.approx(local_fb.cost_scale, rel=1e-12)
    # The same sample, folds and fit in one process give the same reward model (to BLAS rounding).
    q = distributed_estimated_rewards(local_fb, sample_size=1000, seed=4)
    folds = query_folds(local_fb.query_ids, run.reward_model.n_folds, seed=4)
    np.testing.assert_allclose(q, run.reward_model.predict(local_fb.features, folds), rtol=0, atol=1e-12)
    local = estimate_policy_value(target, local_fb, n_bootstrap=200, estimated_rewards=q, seed=4)
    assert_same_table(table, local)
    # Poisson bootstrap per batch: the same spread as the single-process bootstrap, around the estimate.
    ratio = table["boot_std_error"] / local["boot_std_error"]
    assert ratio.between(0.75, 1.33).all(), ratio.tolist()
    assert ((table["boot_ci_low"] < table["estimate"]) & (table["estimate"] < table["boot_ci_high"])).all()
    # The reward model never predicted a row it was fitted on: its folds are hashed from the query ids.
    assert run.reward_model.n_folds == 5 and set(np.unique(folds)) == set(range(5))


@on_ray
def test_decision_store_export_in_shards(tmp_path: Path) -> None:
    from agents.online import OnlineRouter
    from agents.routers import LinUCB

    data = make_synthetic(n_queries=700, models=3, n_features=4, seed=5)
    policy = LinUCB(alpha=0.5, epsilon=0.3, seed=1).fit(data.select(np.arange(200)), cost_weight=0.5)
    router = OnlineRouter(policy, tmp_path / "d.db")
    for i in range(200, 700):
        d = router.route(data.features[i])
        router.feedback(d.decision_id, float(data.quality[i, d.action]), cost=float(data.cost[i, d.action]))
    export = router.store.export()
    paths = write_shards(export, tmp_path / "export", 9)
    target = random_linear(data.models, 4, seed=3, temperature=0.5)
    estimators = ["IPS", "SNIPS", "DR", "SNDR", "SwitchDR"]
    table = estimate_policy_value_distributed(
        target, [str(p) for p in paths], estimators, n_bootstrap=0, cost_weight=0.5, batch_size=None
    )
    local_fb = router.store.export_bandit_feedback(cost_weight=0.5)
    q = distributed_estimated_rewards(local_fb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)
        local = estimate_policy_value(target, local_fb, estimators, n_bootstrap=0, estimated_rewards=q)
    assert_same_table(table, local)
    assert table["boot_ci_low"].isna().all()


@on_ray
def test_featurizer_is_fitted_once_and_applied_per_batch(tmp_path: Path) -> None:
    data = make_synthetic(n_queries=1500, models=3, n_features=4, seed=6)
    fb = simulate_bandit_feedback(data, np.full((1500, 3), 1.0 / 3), seed=1)
    text_logs = dataclasses.replace(
        data.with_features(np.zeros((1500, 0), dtype=np.float32)),
        logged_action=fb.action,
        propensity=fb.propensity,
    )
    write_shards(text_logs, tmp_path, 8)
    featurizer = TextFeaturizer(n_components=6, seed=0)
    target = random_linear(data.models, 6, seed=4, temperature=0.5)
    dataset = read_logs(tmp_path)  # a ray Dataset is accepted as is
    table = estimate_policy_value_distributed(
        target, dataset, ["DM", "IPS", "DR", "Replay"], n_bootstrap=0, featurizer=featurizer, sample_size=500
    )
    run = table.attrs["distributed"]
    assert run.featurizer is featurizer and featurizer.is_fitted and run.sample_rows == 500
    local_fb = BanditFeedback.from_dataset(featurize(text_logs, featurizer))
    q = distributed_estimated_rewards(local_fb, sample_size=500)
    local = estimate_policy_value(
        target, local_fb, ["DM", "IPS", "DR", "Replay"], n_bootstrap=0, estimated_rewards=q
    )
    assert_same_table(table, local)
    scores = score_policy(target, tmp_path, featurizer=featurizer).to_pandas()
    assert len(scores) == 1500 * 3  # every row of the long logs
    first = scores.drop_duplicates("query_id").set_index("query_id").loc[list(local_fb.query_ids)]
    expected = target.action_probabilities(local_fb.features)
    np.testing.assert_allclose(np.stack(first["action_probabilities"].to_numpy()), expected, atol=1e-12)
    assert first["chosen_model"].tolist() == [data.models[j] for j in expected.argmax(axis=1)]
    rows = np.array([data.models.index(m) for m in scores["model"]])
    probs = np.stack(scores["action_probabilities"].to_numpy())
    np.testing.assert_allclose(scores["target_probability"], probs[np.arange(len(scores)), rows])


@on_ray
def test_bootstrap_intervals_cover_the_truth(tmp_path: Path) -> None:
    data = make_synthetic(n_queries=2000, models=3, n_features=4, seed=8)
    logger = random_linear(data.models, 4, seed=5, temperature=1.0, epsilon=0.3)
    target = random_linear(data.models, 4, seed=6, temperature=0.5)
    covered = {"IPS": 0, "SNIPS": 0}
    n_logs = 12
    for s in range(n_logs):
        fb = simulate_bandit_feedback(data, logger, seed=100 + s)
        folder = tmp_path / f"log{s}"
        write_shards(fb.to_dataset(), folder, 8)
        table = estimate_policy_value_distributed(target, folder, ["IPS", "SNIPS"], n_bootstrap=200, seed=s)
        truth = fb.true_value(target)
        for row in table.itertuples(index=False):
            covered[str(row.estimator)] += int(row.boot_ci_low <= truth <= row.boot_ci_high)
            assert row.boot_std_error == pytest.approx(row.std_error, rel=0.25)
    # 95% intervals: at least 9 of 12 (a calibrated interval falls below that with probability 0.2%).
    assert min(covered.values()) >= 9, covered


@on_ray
def test_bad_logs_and_arguments_get_clear_errors(
    full_logs: tuple[LoggedDataset, Path], tmp_path: Path
) -> None:
    logged, folder = full_logs
    target = random_linear(logged.models, 5, seed=2)
    with pytest.raises(ModelMismatchError, match="must be the policy's models in its order"):
        estimate_policy_value_distributed(target, folder, models=list(reversed(logged.models)))
    with pytest.raises(ShapeError, match="fitted on 3 features, but the logs have 5"):
        estimate_policy_value_distributed(random_linear(logged.models, 3, seed=0), folder, ["IPS"])
    with pytest.raises(ConfigurationError, match="n_bootstrap must be 0"):
        estimate_policy_value_distributed(target, folder, n_bootstrap=1)
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        estimate_policy_value_distributed(target, folder, batch_size=0)
    with pytest.raises(FileNotFoundError, match="no parquet files match"):
        estimate_policy_value_distributed(target, str(tmp_path / "nothing-*.parquet"))
    full_only = tmp_path / "full.parquet"
    make_synthetic(n_queries=20, models=4, n_features=5, seed=0).save(full_only)
    with pytest.raises(SchemaError, match="needs bandit logs: a 'propensity' column"):
        estimate_policy_value_distributed(target, full_only)
    # A bad value inside a batch is found on a worker and raised here as our own error, with its message.
    frame = logged.select(np.arange(50)).to_frame()
    frame.loc[frame["logged"].to_numpy().nonzero()[0][3], "propensity"] = 0.0
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(SchemaError, match=r"'propensity' must lie in \(0, 1\] on logged rows, got 0.0"):
        estimate_policy_value_distributed(target, tmp_path / "bad.parquet", ["IPS"])
    other = ConstantPolicy(("a", "b", "c", "d"), [0.25] * 4)
    with pytest.raises(ModelMismatchError, match="not in models="):
        estimate_policy_value_distributed(other, folder, ["IPS"])
