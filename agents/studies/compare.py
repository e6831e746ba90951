"""Compare every router on a held-out split: the cost–quality frontier study behind ``routing-env demo`` and
``experiments/frontier.py``.

:func:`compare_routers` fits each router family on a training split and scores it exactly
(:func:`routing_env.metrics.evaluate_policy`) on a full-information test split over a grid of cost weights λ,
then summarises each family's curve of operating points:

- **AIQ** and **gap closed** (RouterBench): the mean height of the router's non-decreasing convex hull over the
  single models' cost range, and the share of the AIQ gap between the zero router (the hull of the single models)
  and the oracle that the router closes — over linear USD (RouterBench) and over log USD;
- **cost saved at 95 %** of the strongest model's quality: ``1 − cost/cost(strongest)`` at the cheapest point of
  the router's hull that reaches ``0.95 × quality(strongest)``;
- for two-model sets, **APGR** and **CPT(50 %)/CPT(80 %)** (RouteLLM) and the strong model's call share at 95 %;
- per λ, each router's mean reward next to the oracle's.

Every router's hull is anchored at the cheapest single model (each router family can fall back to "always the
cheapest model"), so AIQ is defined on the whole common cost range.

Router families (:data:`ROUTERS`): ``random``, ``best-single`` (the best model on the training split at each λ),
``knn``, ``mlp``, ``logistic`` (RouterBench-style predictive routers), ``matrix-factorization`` (RouteLLM's MF
router, two-model sets only; a threshold sweep instead of λ), the cost-aware bandits ``linucb``, ``thompson``,
``epsilon-greedy``, ``softmax`` (warm-started on the full-information training split, then λ is set at decision
time), ``ppo`` (one PPO policy per λ of ``ppo_cost_weights``) and ``ppo-conditioned`` (one λ-conditioned PPO policy
for the whole grid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import LoggedDataset, QueryFeaturizer, SentenceEmbeddingFeaturizer, split_and_featurize
from routing_env.data.featurizers import DEFAULT_EMBEDDING_MODEL
from routing_env.errors import ConfigurationError, PartialInformationError
from routing_env.metrics import (
    PolicyEvaluation,
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    evaluate_cascade,
    evaluate_policy,
    gap_closed,
    oracle,
    oracle_points,
    single_model_points,
)

__all__ = [
    "BANDITS",
    "CASCADE_METHODS",
    "DEFAULT_COST_WEIGHTS",
    "LEARNED",
    "ROUTERS",
    "CompareConfig",
    "Comparison",
    "compare_cascades",
    "compare_routers",
    "prepare_splits",
    "run_cascade_study",
    "run_frontier_study",
]

#: λ grid: dense where routing pays off on typical price ratios (the curves between grid points are only
#: interpolated), then out to "cost dominates".
DEFAULT_COST_WEIGHTS: tuple[float, ...] = (
    *(0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2),
    *(0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
ROUTERS: tuple[str, ...] = (
    "random",
    "best-single",
    "knn",
    "mlp",
    "logistic",
    "matrix-factorization",
    "linucb",
    "thompson",
    "epsilon-greedy",
    "softmax",
    "ppo",
    "ppo-conditioned",
)
BANDITS: tuple[str, ...] = ("linucb", "thompson", "epsilon-greedy", "softmax")
#: Featurizers :func:`prepare_splits` can fit on the training prompts (see :attr:`CompareConfig.featurizer`).
FEATURIZERS: tuple[str, ...] = ("text", "embeddings")
#: Routers that learn from the query features (the others are fixed rules).
LEARNED: tuple[str, ...] = tuple(r for r in ROUTERS if r not in ("random", "best-single"))
#: Strong-model call shares the MF router's threshold is calibrated to.
_MF_SHARES = tuple(np.round(np.linspace(0.0, 1.0, 21), 3).tolist())

Log = Callable[[str], None]


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a frontier study.

    Attributes:
        cost_weights: the λ grid every router is scored on.
        routers: router families to run (names from :data:`ROUTERS`).
        test_size: held-out share of the queries (split by prompt when the data has prompts).
        seed: seeds the split, the featurizer and every router.
        ppo_timesteps: environment steps per per-λ PPO policy.
        ppo_cost_weights: the λ values a per-λ PPO policy is trained for (default: the whole grid).
        ppo_conditioned_timesteps: environment steps of the λ-conditioned PPO policy.
        ppo_conditioned_range: λ range of the conditioned policy, which is scored only inside it (default: the
            grid's range capped at λ = 1, where the most expensive model must be worth a full quality point;
            the env draws λ uniformly, so a wider range spends most episodes where every router already
            picks the cheapest models).
        n_envs: parallel copies in PPO's vector env.
        quality_target: share of the strongest model's quality the "cost saved" column aims at.
        featurize: ``"auto"`` fits the default text featurizer (TF-IDF + SVD, plus the task one-hot) on the
            training prompts when the data has prompts but no features; ``"always"`` also replaces existing
            features; ``"never"`` keeps the features as they are.
        bandit_alpha: LinUCB's confidence width.
        featurizer: what features are derived from the prompts: ``"text"`` (TF-IDF + SVD, scikit-learn only) or
            ``"embeddings"`` (all-MiniLM-L6-v2 sentence embeddings scaled to unit mean-square coordinates; needs
            ``pip install 'routing-env[embeddings]'``); both followed by the task one-hot when tasks are known.
    """

    cost_weights: tuple[float, ...] = DEFAULT_COST_WEIGHTS
    routers: tuple[str, ...] = ROUTERS
    test_size: float = 0.25
    seed: int = 0
    ppo_timesteps: int = 60_000
    ppo_cost_weights: tuple[float, ...] | None = None
    ppo_conditioned_timesteps: int = 200_000
    ppo_conditioned_range: tuple[float, float] | None = None
    n_envs: int = 8
    quality_target: float = 0.95
    featurize: Literal["auto", "always", "never"] = "auto"
    bandit_alpha: float = 0.1
    featurizer: Literal["text", "embeddings"] = "text"

    def __post_init__(self) -> None:
        weights = tuple(float(w) for w in self.cost_weights)
        if not weights or any(not np.isfinite(w) or w < 0 for w in weights):
            raise ConfigurationError(f"cost_weights must be finite numbers ≥ 0, got {self.cost_weights!r}")
        object.__setattr__(self, "cost_weights", tuple(sorted(set(weights))))
        unknown = [r for r in self.routers if r not in ROUTERS]
        if unknown or not self.routers:
            raise ConfigurationError(f"routers must be names from {list(ROUTERS)}, got {list(self.routers)}")
        if not 0.0 < float(self.test_size) < 1.0:
            raise ConfigurationError(f"test_size must be in (0, 1), got {self.test_size!r}")
        for name in ("ppo_timesteps", "ppo_conditioned_timesteps", "n_envs"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 < float(self.quality_target) <= 1.0:
            raise ConfigurationError(f"quality_target must be in (0, 1], got {self.quality_target!r}")
        if self.featurize not in ("auto", "always", "never"):
            raise ConfigurationError(f"featurize must be 'auto', 'always' or 'never', got {self.featurize!r}")
        if self.featurizer not in FEATURIZERS:
            raise ConfigurationError(
                f"featurizer must be one of {list(FEATURIZERS)}, got {self.featurizer!r}"
            )
        if self.ppo_cost_weights is not None:
            object.__setattr__(self, "ppo_cost_weights", tuple(float(w) for w in self.ppo_cost_weights))


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_routers`.

    Attributes:
        name: dataset label.
        models: the K model names.
        points: one row per (router, setting): ``router``, ``setting`` (``λ=…`` or ``share=…``),
            ``cost_weight`` (NaN for threshold sweeps), ``mean_quality``, ``mean_cost_usd``, ``mean_reward``,
            ``regret``, ``share_<model>``.
        table: one row per router (and ``oracle``): ``aiq``, ``gap_closed``, ``gap_closed_log``,
            ``cost_at_target_usd``, ``cost_saved_at_target``; with two models also ``apgr``, ``cpt50``,
            ``cpt80`` and ``strong_share_at_target``; ``train_seconds``.
        rewards: mean reward per λ (rows) and router (columns), plus ``oracle``.
        singles: per model ``mean_quality`` and ``mean_cost_usd`` on the test split.
        oracle_curve: ``(m, 2)`` (cost, quality) of the oracle over a dense λ sweep.
        info: split sizes, the strongest model, the target quality, the AIQ of the zero router and oracle...
    """

    name: str
    models: tuple[str, ...]
    points: pd.DataFrame
    table: pd.DataFrame
    rewards: pd.DataFrame
    singles: pd.DataFrame
    oracle_curve: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ reporting
    def ppo_vs_best_bandit(self) -> pd.DataFrame:
        """Per λ: the best bandit's reward, each PPO variant's reward and its relative shortfall (≤ 0.02 = within
        2 %), where both were run."""
        bandits = [b for b in BANDITS if b in self.rewards.columns]
        ppos = [p for p in ("ppo", "ppo-conditioned") if p in self.rewards.columns]
        if not bandits or not ppos:
            return pd.DataFrame()
        # λ values where only some routers ran (a per-λ PPO off the grid) have no bandit to compare with.
        scored = self.rewards[bandits].notna().any(axis=1)
        rewards = self.rewards[scored]
        out = pd.DataFrame(index=rewards.index)
        best = rewards[bandits].max(axis=1)
        out["best_bandit"] = rewards[bandits].idxmax(axis=1)
        out["best_bandit_reward"] = best
        for p in ppos:
            out[f"{p}_reward"] = rewards[p]
            out[f"{p}_shortfall"] = (best - rewards[p]) / best.abs().clip(lower=1e-12)
        return out

    def to_markdown(self) -> str:
        """A report: the summary table, the per-λ rewards and the PPO-vs-bandit check."""
        info = self.info
        lines = [
            f"# {info.get('study', 'Frontier study')}: {self.name}",
            "",
            f"{info.get('n_train', '?')} training / {info.get('n_test', '?')} test queries, "
            f"{len(self.models)} models; features: {info.get('features', '?')}. "
            f"Strongest model: `{info.get('strongest')}` (quality {info.get('strongest_quality', float('nan')):.4f}); "
            f"target {info.get('quality_target', 0.95):.0%} of it = {info.get('target_quality', float('nan')):.4f}.",
            "",
            "## Single models (test split)",
            "",
            _markdown_table(self.singles),
            "",
            "## Routers",
            "",
            "AIQ and gap closed over the single models' cost range (gap_closed_log: over log cost); cost saved at "
            "the target relative to the strongest model.",
            "",
            _markdown_table(self.table),
            "",
            "## Mean reward per cost weight λ (test split)",
            "",
            _markdown_table(self.rewards.reset_index()),
        ]
        check = self.ppo_vs_best_bandit()
        if not check.empty:
            lines += ["", "## PPO against the best bandit", "", _markdown_table(check.reset_index())]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Cost–quality plot (and, with two models, quality against the strong model's call share) as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        two = len(self.models) == 2
        fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 8, 5.5), squeeze=False)
        ax = axes[0, 0]
        cmap = plt.get_cmap("tab20")
        routers = [r for r in self.table["router"] if r != "oracle"]
        for i, r in enumerate(routers):
            pts = self.points[self.points["router"] == r].sort_values("mean_cost_usd")
            ax.plot(
                pts["mean_cost_usd"],
                pts["mean_quality"],
                marker="o",
                ms=3.5,
                lw=1.2,
                color=cmap(i % 20),
                label=r,
            )
        oc = self.oracle_curve
        ax.plot(oc[:, 0], oc[:, 1], "k--", lw=1.5, label="oracle")
        s = self.singles
        ax.scatter(
            s["mean_cost_usd"], s["mean_quality"], marker="*", s=140, c="k", zorder=5, label="single models"
        )
        for _, row in s.iterrows():
            ax.annotate(
                str(row["model"]),
                (row["mean_cost_usd"], row["mean_quality"]),
                fontsize=7,
                xytext=(4, -8),
                textcoords="offset points",
            )
        costs = np.concatenate([s["mean_cost_usd"].to_numpy(), oc[:, 0]])
        costs = costs[costs > 0]
        if costs.size and costs.max() / costs.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel("mean cost per query (USD)")
        ax.set_ylabel("mean quality")
        ax.set_title(f"{self.name}: cost–quality on the test split")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        if two:
            strong = self.info["strong_model"]
            ax2 = axes[0, 1]
            col = f"share_{strong}"
            for i, r in enumerate(routers):
                pts = self.points[self.points["router"] == r].sort_values(col)
                ax2.plot(
                    pts[col], pts["mean_quality"], marker="o", ms=3.5, lw=1.2, color=cmap(i % 20), label=r
                )
            wq, sq = self.info["weak_quality"], self.info["strong_quality"]
            b = self.info["oracle_strong_share"]
            oq = self.info["oracle_quality"]
            ax2.plot([0, b, 1], [wq, oq, oq], "k--", label="oracle")
            ax2.plot([0, 1], [wq, sq], ":", color="grey", label="random mix")
            ax2.axhline(self.info["target_quality"], color="red", lw=0.8, alpha=0.6, label="target")
            ax2.set_xlabel(f"share of calls to {strong}")
            ax2.set_ylabel("mean quality")
            ax2.set_title("quality against strong-model calls (RouteLLM view)")
            ax2.grid(alpha=0.3)
            ax2.legend(fontsize=7, ncol=2, loc="lower right")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
        plt.close(fig)
        return out

    def save(self, out_dir: str | Path, stem: str) -> dict[str, Path]:
        """Write ``<stem>_points.csv``, ``<stem>_table.csv``, ``<stem>_rewards.csv``, ``<stem>.md`` and
        ``<stem>.png`` into ``out_dir``; return their paths."""
        root = Path(out_dir)
        root.mkdir(parents=True, exist_ok=True)
        paths = {
            "points": root / f"{stem}_points.csv",
            "table": root / f"{stem}_table.csv",
            "rewards": root / f"{stem}_rewards.csv",
            "report": root / f"{stem}.md",
            "plot": root / f"{stem}.png",
        }
        self.points.to_csv(paths["points"], index=False, float_format="%.6g")
        self.table.to_csv(paths["table"], index=False, float_format="%.6g")
        self.rewards.to_csv(paths["rewards"], float_format="%.6g")
        paths["report"].write_text(self.to_markdown())
        self.plot(paths["plot"])
        return paths


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for v in values:
            if isinstance(v, (float, np.floating)):
                cells.append("" if np.isnan(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------- data preparation
def prepare_splits(dataset: LoggedDataset, config: CompareConfig) -> tuple[LoggedDataset, LoggedDataset, str]:
    """Split ``dataset`` into train/test and give both features (see :attr:`CompareConfig.featurize`).

    Returns ``(train, test, description of the features)``.
    """
    if not dataset.is_full_information:
        raise PartialInformationError(
            "the frontier study scores every router exactly and needs every model's outcome on every query"
        )
    refit = config.featurize == "always" or (config.featurize == "auto" and dataset.n_features == 0)
    if not refit and config.featurizer != "text":
        raise ConfigurationError(
            f"featurizer={config.featurizer!r} applies only when features are derived from the prompts, but "
            f"featurize={config.featurize!r} keeps the dataset's own {dataset.n_features} features; "
            "use featurize='always' to replace them"
        )
    if refit:
        if dataset.prompts is None:
            raise ConfigurationError(
                "the dataset has no features and no prompts to derive them from; give it features "
                "(LoggedDataset.with_features) or prompts"
            )
        if config.featurizer == "embeddings":
            # Unit-variance scaling puts the embeddings on the scale of the standardised text features.
            featurizer: QueryFeaturizer | None = QueryFeaturizer(
                SentenceEmbeddingFeaturizer(unit_variance=True)
            )
            kind = f"{DEFAULT_EMBEDDING_MODEL} sentence embeddings"
        else:
            featurizer, kind = None, "text featurizer fitted on the training prompts"
        split = split_and_featurize(
            dataset, test_size=config.test_size, seed=config.seed, featurizer=featurizer
        )
        what = f"{kind} ({split.train.n_features} dims"
        what += ", incl. task one-hot)" if dataset.tasks is not None else ")"
        return split.train, split.test, what
    if dataset.n_features == 0:
        raise ConfigurationError("the dataset has no features and featurize='never'")
    train, test = dataset.split(test_size=config.test_size, seed=config.seed)
    return train, test, f"the dataset's own {dataset.n_features} features"


# ---------------------------------------------------------------------- router runs
@dataclass
class _Run:
    """Operating points of one router family, with the time its training took."""

    name: str
    evals: list[tuple[str, float, PolicyEvaluation]] = field(default_factory=list)
    seconds: float = 0.0


def _at(policy: Any, lam: float) -> Any:
    """``policy`` set to route at λ (cost-aware routers switch without retraining)."""
    if hasattr(policy, "with_cost_weight"):
        return policy.with_cost_weight(lam)
    policy.cost_weight = lam
    return policy


def _run_router(
    name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> _Run | None:
    from agents import baselines
    from agents.routers import EpsilonGreedy, LinearThompsonSampling, LinUCB, SoftmaxBandit

    seed = config.seed
    weights = config.cost_weights
    run = _Run(name)
    start = time.perf_counter()

    def sweep(policy: Any) -> None:
        for lam in weights:
            run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, _at(policy, lam), lam)))

    if name == "random":
        policy: Any = baselines.RandomRouter(seed=seed).fit(train)
        run.seconds = time.perf_counter() - start
        sweep(policy)
    elif name == "best-single":
        for lam in weights:
            p = baselines.BestSingleModel(seed=seed).fit(train, cost_weight=lam)
            run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, p, lam)))
        run.seconds = time.perf_counter() - start
    elif name in ("knn", "mlp", "logistic"):
        cls = {"knn": baselines.KNNRouter, "mlp": baselines.MLPRouter, "logistic": baselines.LogisticRouter}[
            name
        ]
        policy = cls(seed=seed).fit(train)
        run.seconds = time.perf_counter() - start
        sweep(policy)
    elif name == "matrix-factorization":
        if train.n_models != 2:
            log(
                f"  {name}: skipped (RouteLLM's MF router needs exactly two models, the data has {train.n_models})"
            )
            return None
        policy = baselines.MatrixFactorizationRouter(seed=seed).fit(train)
        run.seconds = time.perf_counter() - start
        for share in _MF_SHARES:
            policy.calibrate_threshold(train.features, share)
            run.evals.append((f"share={share:g}", float("nan"), evaluate_policy(test, policy, 0.0)))
    elif name in BANDITS:
        ctor: dict[str, Callable[[], Any]] = {
            "linucb": lambda: LinUCB(alpha=config.bandit_alpha, seed=seed),
            "thompson": lambda: LinearThompsonSampling(seed=seed),
            "epsilon-greedy": lambda: EpsilonGreedy(epsilon=0.05, seed=seed),
            "softmax": lambda: SoftmaxBandit(temperature=0.02, seed=seed),
        }
        policy = ctor[name]().fit(train)
        run.seconds = time.perf_counter() - start
        sweep(policy)
    elif name == "ppo":
        from agents.training.ppo import train_ppo

        grid = config.ppo_cost_weights if config.ppo_cost_weights is not None else weights
        for lam in grid:
            t0 = time.perf_counter()
            result = train_ppo(
                train, lam, total_timesteps=config.ppo_timesteps, n_envs=config.n_envs, seed=seed
            )
            run.seconds += time.perf_counter() - t0
            assert result.policy is not None
            run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, result.policy, lam)))
            log(f"  ppo λ={lam:g}: test reward {run.evals[-1][2].mean_reward:.4f} ({result.fps:.0f} steps/s)")
    elif name == "ppo-conditioned":
        from agents.training.ppo import train_ppo

        lo, hi = config.ppo_conditioned_range or (min(weights), min(max(weights), 1.0))
        if hi <= lo:
            hi = lo + 1.0
        result = train_ppo(
            train,
            cost_weight_range=(lo, hi),
            total_timesteps=config.ppo_conditioned_timesteps,
            n_envs=config.n_envs,
            seed=seed,
            eval_cost_weights=tuple(w for w in weights if lo <= w <= hi) or None,
        )
        run.seconds = time.perf_counter() - start
        assert result.policy is not None
        # Scored only inside the λ range it was trained on (outside it the network extrapolates).
        for lam in weights:
            if lo <= lam <= hi:
                run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, _at(result.policy, lam), lam)))
    else:  # pragma: no cover - CompareConfig validates the names
        raise ConfigurationError(f"unknown router {name!r}")
    return run


# ---------------------------------------------------------------------- the study
def compare_routers(
    train: LoggedDataset,
    test: LoggedDataset,
    config: CompareConfig | None = None,
    *,
    name: str = "dataset",
    features: str = "",
    log: Log | None = None,
) -> Comparison:
    """Fit every router family of ``config.routers`` on ``train`` and score it on ``test`` over the λ grid.

    Args:
        train: training split (full information, with features).
        test: held-out split over the same models (full information).
        config: :class:`CompareConfig`.
        name: dataset label for reports.
        features: description of the features for the report.
        log: progress messages (default: silent).

    Returns:
        A :class:`Comparison` (tables, the plot via :meth:`Comparison.plot`, files via :meth:`Comparison.save`).
    """
    cfg = config if config is not None else CompareConfig()
    say: Log = log if log is not None else (lambda _msg: None)
    for what, ds in (("train", train), ("test", test)):
        if not ds.is_full_information:
            raise PartialInformationError(f"the {what} split must be full-information to be scored exactly")
    if train.models != test.models:
        raise ConfigurationError(f"train and test have different models: {train.models} vs {test.models}")
    if train.n_features != test.n_features or train.n_features == 0:
        raise ConfigurationError(
            f"train and test need the same non-zero feature width, got {train.n_features} and {test.n_features}"
        )

    runs: list[_Run] = []
    for r in cfg.routers:
        say(f"[{name}] {r} ...")
        t0 = time.perf_counter()
        run = _run_router(r, train, test, cfg, say)
        if run is not None:
            runs.append(run)
            say(f"[{name}] {r}: done in {time.perf_counter() - t0:.1f}s")

    return _summarise(runs, train, test, cfg, name=name, features=features)


def _summarise(
    runs: Sequence[_Run],
    train: LoggedDataset,
    test: LoggedDataset,
    cfg: CompareConfig,
    *,
    name: str,
    features: str,
    order: Sequence[str] | None = None,
) -> Comparison:
    """Tables of a study from the routers' operating points on ``test``."""
    singles_pts = single_model_points(test)
    singles = pd.DataFrame(
        {"model": list(test.models), "mean_quality": singles_pts[:, 1], "mean_cost_usd": singles_pts[:, 0]}
    )
    strongest = int(np.argmax(singles_pts[:, 1]))
    target = cfg.quality_target * singles_pts[strongest, 1]
    cheapest = int(np.argmin(singles_pts[:, 0]))
    anchor = singles_pts[cheapest]
    cost_range = (float(singles_pts[:, 0].min()), float(singles_pts[:, 0].max()))
    oracle_evals = oracle_points(test)
    oracle_curve = np.array([e.point for e in oracle_evals])

    # ---- points
    rows: list[dict[str, Any]] = []
    for run in runs:
        for setting, lam, ev in run.evals:
            row: dict[str, Any] = {"router": run.name, "setting": setting, **ev.as_dict()}
            row["cost_weight"] = lam
            rows.append(row)
    for lam in cfg.cost_weights:
        rows.append({"router": "oracle", "setting": f"λ={lam:g}", **oracle(test, lam).as_dict()})
    points = pd.DataFrame(rows).drop(columns=["n_queries"])

    # ---- per-router summary
    two = test.n_models == 2
    has_gap = False
    info: dict[str, Any] = {
        "n_train": train.n_queries,
        "n_test": test.n_queries,
        "features": features or f"{train.n_features} features",
        "strongest": test.models[strongest],
        "strongest_quality": float(singles_pts[strongest, 1]),
        "strongest_cost": float(singles_pts[strongest, 0]),
        "quality_target": cfg.quality_target,
        "target_quality": float(target),
        "cost_range": cost_range,
        "aiq_zero_router": aiq(singles_pts, cost_range),
        "aiq_oracle": aiq(oracle_curve, cost_range),
        "cost_weights": list(cfg.cost_weights),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    if two:
        weak_i = int(np.argmin(singles_pts[:, 0]))
        strong_i = 1 - weak_i
        o0 = oracle(test, 1e-6)
        info.update(
            strong_model=test.models[strong_i],
            weak_model=test.models[weak_i],
            weak_quality=float(singles_pts[weak_i, 1]),
            strong_quality=float(singles_pts[strong_i, 1]),
            oracle_quality=o0.mean_quality,
            oracle_strong_share=o0.call_share[strong_i],
        )
        has_gap = info["strong_quality"] > info["weak_quality"]
    table_rows: list[dict[str, Any]] = []
    curves = [(run.name, [ev for _, _, ev in run.evals], run.seconds) for run in runs]
    curves.append(("oracle", list(oracle_evals), 0.0))
    for rname, evals, seconds in curves:
        pts = np.array([ev.point for ev in evals] + [tuple(anchor)])
        row = {"router": rname}
        row["aiq"] = aiq(pts, cost_range)
        row["gap_closed"] = gap_closed(pts, singles_pts, oracle_curve, cost_range)
        row["gap_closed_log"] = (
            gap_closed(pts, singles_pts, oracle_curve, cost_range, log_cost=True)
            if cost_range[0] > 0
            else np.nan
        )
        c = cost_at_quality(pts, target)
        row["cost_at_target_usd"] = c
        row["cost_saved_at_target"] = 1.0 - c / info["strongest_cost"] if np.isfinite(c) else np.nan
        if two and has_gap:
            share = np.array([ev.share(info["strong_model"]) for ev in evals])
            qual = np.array([ev.mean_quality for ev in evals])
            kw = {"weak_quality": info["weak_quality"], "strong_quality": info["strong_quality"]}
            row["apgr"] = apgr(share, qual, **kw)
            row["cpt50"] = cpt(share, qual, 0.5, **kw)
            row["cpt80"] = cpt(share, qual, 0.8, **kw)
            x = (target - info["weak_quality"]) / (info["strong_quality"] - info["weak_quality"])
            row["strong_share_at_target"] = cpt(share, qual, float(np.clip(x, 0.0, 1.0)), **kw)
        row["train_seconds"] = seconds
        table_rows.append(row)
    table = pd.DataFrame(table_rows)

    # ---- rewards per λ
    lam_points = points[points["setting"].str.startswith("λ=")]
    rewards = lam_points.pivot_table(index="cost_weight", columns="router", values="mean_reward", sort=False)
    names = [*(order if order is not None else cfg.routers), "oracle"]
    rewards = rewards[[r for r in names if r in rewards.columns]].sort_index()
    rewards.index.name = "cost_weight"
    return Comparison(
        name=name,
        models=test.models,
        points=points,
        table=table,
        rewards=rewards,
        singles=singles,
        oracle_curve=oracle_curve,
        info=info,
    )


#: Cascade study methods: threshold cascades, cascade bandits, PPO on Cascade-v0 (fixed chain, and free choice
#: with MaskablePPO), against single-shot routers.
CASCADE_METHODS: tuple[str, ...] = (
    "threshold-cascade",
    "cascade-bandit",
    "ppo-cascade",
    "ppo-free",
    "router-linucb",
    "router-ppo",
)


def _run_cascade_method(
    method: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> _Run:
    from agents.routers import LinUCB, ThresholdCascade
    from agents.routers.cascades import CascadeBandit
    from agents.training.ppo import evaluate_cascade_model, train_ppo

    seed = config.seed
    run = _Run(method)
    start = time.perf_counter()
    ppo_grid = config.ppo_cost_weights if config.ppo_cost_weights is not None else config.cost_weights
    if method in ("threshold-cascade", "cascade-bandit"):
        for lam in config.cost_weights:
            policy: Any = (
                ThresholdCascade(seed=seed) if method == "threshold-cascade" else CascadeBandit(seed=seed)
            ).fit(train, cost_weight=lam)
            run.evals.append((f"λ={lam:g}", lam, evaluate_cascade(test, policy, lam)))
        run.seconds = time.perf_counter() - start
    elif method in ("ppo-cascade", "ppo-free"):
        mode = "chain" if method == "ppo-cascade" else "free"
        for lam in ppo_grid:
            t0 = time.perf_counter()
            result = train_ppo(
                train,
                lam,
                cascade=True,
                total_timesteps=config.ppo_timesteps,
                n_envs=config.n_envs,
                seed=seed,
                validation=None,
                env_kwargs={"mode": mode},
            )
            run.seconds += time.perf_counter() - t0
            ev = evaluate_cascade_model(result, test, lam)
            # The env routes over its own model order; report shares in the dataset's order.
            shares = dict(zip(ev.models, ev.call_share))
            ev = replace(ev, models=test.models, call_share=tuple(shares.get(m, 0.0) for m in test.models))
            run.evals.append((f"λ={lam:g}", lam, ev))
            log(f"  {method} λ={lam:g}: test reward {ev.mean_reward:.4f} ({result.fps:.0f} steps/s)")
    elif method == "router-linucb":
        bandit = LinUCB(alpha=config.bandit_alpha, seed=seed).fit(train)
        run.seconds = time.perf_counter() - start
        for lam in config.cost_weights:
            run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, _at(bandit, lam), lam)))
    elif method == "router-ppo":
        for lam in ppo_grid:
            t0 = time.perf_counter()
            res = train_ppo(train, lam, total_timesteps=config.ppo_timesteps, n_envs=config.n_envs, seed=seed)
            run.seconds += time.perf_counter() - t0
            assert res.policy is not None
            run.evals.append((f"λ={lam:g}", lam, evaluate_policy(test, res.policy, lam)))
    else:
        raise ConfigurationError(
            f"unknown cascade method {method!r}; expected one of {list(CASCADE_METHODS)}"
        )
    return run


def compare_cascades(
    train: LoggedDataset,
    test: LoggedDataset,
    config: CompareConfig | None = None,
    *,
    methods: Sequence[str] = CASCADE_METHODS,
    name: str = "dataset",
    features: str = "",
    log: Log | None = None,
) -> Comparison:
    """Cascades (call cheap models first, escalate on a low signal) against single-shot routing on ``test``.

    Threshold cascades and cascade bandits are scored exactly (:func:`routing_env.metrics.evaluate_cascade`); PPO
    cascades are replayed query by query through ``routing_env/Cascade-v0`` with their most probable action
    (exact for that deterministic policy). All methods call the models cheapest first. Same outputs as
    :func:`compare_routers` (a :class:`Comparison`); ``cost`` counts every call a cascade makes.
    """
    cfg = config if config is not None else CompareConfig()
    say: Log = log if log is not None else (lambda _msg: None)
    unknown = [m for m in methods if m not in CASCADE_METHODS]
    if unknown or not methods:
        raise ConfigurationError(f"methods must be names from {list(CASCADE_METHODS)}, got {list(methods)}")
    for what, ds in (("train", train), ("test", test)):
        if not ds.is_full_information:
            raise PartialInformationError(f"the {what} split must be full-information to be scored exactly")
        if ds.signal is None:
            raise ConfigurationError(f"the {what} split has no per-call signal, which cascades decide on")
    runs = []
    for m in methods:
        say(f"[{name}] {m} ...")
        t0 = time.perf_counter()
        runs.append(_run_cascade_method(m, train, test, cfg, say))
        say(f"[{name}] {m}: done in {time.perf_counter() - t0:.1f}s")
    result = _summarise(runs, train, test, cfg, name=name, features=features, order=tuple(methods))
    result.info["study"] = "Cascade study"
    return result


def run_cascade_study(
    dataset: LoggedDataset,
    name: str,
    out_dir: str | Path | None = None,
    config: CompareConfig | None = None,
    *,
    methods: Sequence[str] = CASCADE_METHODS,
    stem: str | None = None,
    log: Log | None = None,
) -> tuple[Comparison, dict[str, Path]]:
    """Split and featurize ``dataset``, run :func:`compare_cascades`, and write the same files as
    :func:`run_frontier_study` (default stem ``cascade_<name>``)."""
    cfg = config if config is not None else CompareConfig()
    train, test, features = prepare_splits(dataset, cfg)
    result = compare_cascades(train, test, cfg, methods=methods, name=name, features=features, log=log)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        file_stem = stem or f"cascade_{_slug(name)}"
        paths = result.save(out_dir, file_stem)
        meta = Path(out_dir) / f"{file_stem}_info.json"
        meta.write_text(json.dumps(result.info, indent=1, default=_jsonable))
        paths["info"] = meta
    return result, paths


def run_frontier_study(
    dataset: LoggedDataset,
    name: str,
    out_dir: str | Path | None = None,
    config: CompareConfig | None = None,
    *,
    stem: str | None = None,
    log: Log | None = None,
) -> tuple[Comparison, dict[str, Path]]:
    """Split and featurize ``dataset``, run :func:`compare_routers`, and (with ``out_dir``) write the CSV
    tables, the Markdown report and the PNG plot as ``<stem>_*.csv``, ``<stem>.md``, ``<stem>.png``.

    Returns the :class:`Comparison` and the written paths (empty without ``out_dir``).
    """
    cfg = config if config is not None else CompareConfig()
    train, test, features = prepare_splits(dataset, cfg)
    result = compare_routers(train, test, cfg, name=name, features=features, log=log)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        file_stem = stem or f"frontier_{_slug(name)}"
        paths = result.save(out_dir, file_stem)
        meta = Path(out_dir) / f"{file_stem}_info.json"
        meta.write_text(json.dumps(result.info, indent=1, default=_jsonable))
        paths["info"] = meta
    return result, paths


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name).strip("-").lower() or "dataset"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def scaled_config(config: CompareConfig, factor: float) -> CompareConfig:
    """``config`` with PPO's timesteps multiplied by ``factor`` (for quick runs and smoke tests)."""
    return replace(
        config,
        ppo_timesteps=max(int(config.ppo_timesteps * factor), 256),
        ppo_conditioned_timesteps=max(int(config.ppo_conditioned_timesteps * factor), 256),
    )
