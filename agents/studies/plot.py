"""The cost–quality plot of a study (and, with two models, quality against the strong model's call share)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agents.studies.summary import Comparison

__all__ = ["plot_comparison"]


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write ``comparison``'s plot as PNG to ``path``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = len(comparison.models) == 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 8, 5.5), squeeze=False)
    ax = axes[0, 0]
    cmap = plt.get_cmap("tab20")
    routers = [r for r in comparison.table["router"] if r != "oracle"]
    for i, r in enumerate(routers):
        pts = comparison.points[comparison.points["router"] == r].sort_values("mean_cost_usd")
        ax.plot(
            pts["mean_cost_usd"],
            pts["mean_quality"],
            marker="o",
            ms=3.5,
            lw=1.2,
            color=cmap(i % 20),
            label=r,
        )
    oc = comparison.oracle_curve
    ax.plot(oc[:, 0], oc[:, 1], "k--", lw=1.5, label="oracle")
    s = comparison.singles
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
    ax.set_title(f"{comparison.name}: cost–quality on the test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    if two:
        strong = comparison.info["strong_model"]
        ax2 = axes[0, 1]
        col = f"share_{strong}"
        for i, r in enumerate(routers):
            pts = comparison.points[comparison.points["router"] == r].sort_values(col)
            ax2.plot(pts[col], pts["mean_quality"], marker="o", ms=3.5, lw=1.2, color=cmap(i % 20), label=r)
        wq, sq = comparison.info["weak_quality"], comparison.info["strong_quality"]
        b = comparison.info["oracle_strong_share"]
        oq = comparison.info["oracle_quality"]
        ax2.plot([0, b, 1], [wq, oq, oq], "k--", label="oracle")
        ax2.plot([0, 1], [wq, sq], ":", color="grey", label="random mix")
        ax2.axhline(comparison.info["target_quality"], color="red", lw=0.8, alpha=0.6, label="target")
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
