"""A study's result (:class:`Comparison`: tables, report, plot, files) and how it is summarised from the routers'
operating points (:func:`summarise`): AIQ and gap closed over the single models' cost range, cost saved at the
quality target, RouteLLM's APGR and CPT for two-model sets, and the mean reward per λ."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.studies.config import BANDITS, CompareConfig
from agents.studies.runs import Run
from routing_env.data import LoggedDataset
from routing_env.metrics import (
    PolicyEvaluation,
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    gap_closed,
    oracle,
    oracle_points,
    single_model_points,
)

__all__ = ["Comparison", "summarise"]


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
        from agents.studies.plot import plot_comparison

        return plot_comparison(self, path)

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


@dataclass(frozen=True)
class _Frame:
    """The fixed reference of a study on the test split: the single models, the oracle, the target."""

    singles_pts: np.ndarray  # (K, 2) cost, quality
    oracle_evals: tuple[PolicyEvaluation, ...]
    oracle_curve: np.ndarray  # (m, 2) cost, quality
    cost_range: tuple[float, float]
    anchor: np.ndarray  # (2,) the cheapest single model
    target: float


def summarise(
    runs: Sequence[Run],
    train: LoggedDataset,
    test: LoggedDataset,
    cfg: CompareConfig,
    *,
    name: str,
    features: str,
    order: Sequence[str] | None = None,
) -> Comparison:
    """Tables of a study from the routers' operating points on ``test`` (``order``: the rewards' column order,
    default ``cfg.routers``)."""
    singles_pts = single_model_points(test)
    oracle_evals = tuple(oracle_points(test))
    strongest = int(np.argmax(singles_pts[:, 1]))
    frame = _Frame(
        singles_pts=singles_pts,
        oracle_evals=oracle_evals,
        oracle_curve=np.array([e.point for e in oracle_evals]),
        cost_range=(float(singles_pts[:, 0].min()), float(singles_pts[:, 0].max())),
        anchor=singles_pts[int(np.argmin(singles_pts[:, 0]))],
        target=float(cfg.quality_target * singles_pts[strongest, 1]),
    )
    info = _study_info(train, test, cfg, frame, features)
    points = _points(runs, test, cfg)
    curves = [(run.name, [ev for _, _, ev in run.evals], run.seconds) for run in runs]
    curves.append(("oracle", list(oracle_evals), 0.0))
    table = pd.DataFrame(
        [_router_row(rname, evals, seconds, frame, info) for rname, evals, seconds in curves]
    )
    return Comparison(
        name=name,
        models=test.models,
        points=points,
        table=table,
        rewards=_rewards(points, [*(order if order is not None else cfg.routers), "oracle"]),
        singles=pd.DataFrame(
            {
                "model": list(test.models),
                "mean_quality": singles_pts[:, 1],
                "mean_cost_usd": singles_pts[:, 0],
            }
        ),
        oracle_curve=frame.oracle_curve,
        info=info,
    )


def _study_info(
    train: LoggedDataset, test: LoggedDataset, cfg: CompareConfig, frame: _Frame, features: str
) -> dict[str, Any]:
    """The study's facts for the report and ``<stem>_info.json``; with two models, RouteLLM's reference points."""
    pts = frame.singles_pts
    strongest = int(np.argmax(pts[:, 1]))
    info: dict[str, Any] = {
        "n_train": train.n_queries,
        "n_test": test.n_queries,
        "features": features or f"{train.n_features} features",
        "strongest": test.models[strongest],
        "strongest_quality": float(pts[strongest, 1]),
        "strongest_cost": float(pts[strongest, 0]),
        "quality_target": cfg.quality_target,
        "target_quality": frame.target,
        "cost_range": frame.cost_range,
        "aiq_zero_router": aiq(pts, frame.cost_range),
        "aiq_oracle": aiq(frame.oracle_curve, frame.cost_range),
        "cost_weights": list(cfg.cost_weights),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    if test.n_models == 2:
        weak_i = int(np.argmin(pts[:, 0]))
        strong_i = 1 - weak_i
        o0 = oracle(test, 1e-6)
        info.update(
            strong_model=test.models[strong_i],
            weak_model=test.models[weak_i],
            weak_quality=float(pts[weak_i, 1]),
            strong_quality=float(pts[strong_i, 1]),
            oracle_quality=o0.mean_quality,
            oracle_strong_share=o0.call_share[strong_i],
        )
    return info


def _points(runs: Sequence[Run], test: LoggedDataset, cfg: CompareConfig) -> pd.DataFrame:
    """One row per (router, setting) with its evaluation, plus the oracle at every λ of the grid."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        for setting, lam, ev in run.evals:
            rows.append({"router": run.name, "setting": setting, **ev.as_dict(), "cost_weight": lam})
    for lam in cfg.cost_weights:
        rows.append({"router": "oracle", "setting": f"λ={lam:g}", **oracle(test, lam).as_dict()})
    return pd.DataFrame(rows).drop(columns=["n_queries"])


def _router_row(
    rname: str, evals: Sequence[PolicyEvaluation], seconds: float, frame: _Frame, info: dict[str, Any]
) -> dict[str, Any]:
    """The summary of one router's curve; the hull is anchored at the cheapest single model."""
    pts = np.array([ev.point for ev in evals] + [tuple(frame.anchor)])
    singles, curve, cost_range = frame.singles_pts, frame.oracle_curve, frame.cost_range
    c = cost_at_quality(pts, frame.target)
    row: dict[str, Any] = {
        "router": rname,
        "aiq": aiq(pts, cost_range),
        "gap_closed": gap_closed(pts, singles, curve, cost_range),
        "gap_closed_log": (
            gap_closed(pts, singles, curve, cost_range, log_cost=True) if cost_range[0] > 0 else np.nan
        ),
        "cost_at_target_usd": c,
        "cost_saved_at_target": 1.0 - c / info["strongest_cost"] if np.isfinite(c) else np.nan,
    }
    if "strong_model" in info and info["strong_quality"] > info["weak_quality"]:
        row.update(_routellm_metrics(evals, frame.target, info))
    row["train_seconds"] = seconds
    return row


def _routellm_metrics(
    evals: Sequence[PolicyEvaluation], target: float, info: dict[str, Any]
) -> dict[str, float]:
    """APGR, CPT(50 %), CPT(80 %) and the strong model's call share at the target (two-model sets)."""
    share = np.array([ev.share(info["strong_model"]) for ev in evals])
    qual = np.array([ev.mean_quality for ev in evals])
    weak, strong = info["weak_quality"], info["strong_quality"]
    kw = {"weak_quality": weak, "strong_quality": strong}
    x = (target - weak) / (strong - weak)
    return {
        "apgr": apgr(share, qual, **kw),
        "cpt50": cpt(share, qual, 0.5, **kw),
        "cpt80": cpt(share, qual, 0.8, **kw),
        "strong_share_at_target": cpt(share, qual, float(np.clip(x, 0.0, 1.0)), **kw),
    }


def _rewards(points: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Mean reward per λ (rows) and router (columns, in ``names`` order)."""
    lam_points = points[points["setting"].str.startswith("λ=")]
    rewards = lam_points.pivot_table(index="cost_weight", columns="router", values="mean_reward", sort=False)
    rewards = rewards[[r for r in names if r in rewards.columns]].sort_index()
    rewards.index.name = "cost_weight"
    return rewards
