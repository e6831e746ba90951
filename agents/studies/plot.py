"""The cost–quality plot of a study (and, with two models, quality against the strong model's call share).

Routers are grouped into families (bandits, predictive, PPO, table/cluster, cascades...): the best router of each
family by gap closed is drawn bold in its family's colour and labelled with its gap closed, the others of the
family faint (thin, translucent, dashed), so ten curves in one band stay readable. Routers with a single operating
point (``random``, at every λ) are a dot labelled beside it; the quality target (95 % of the strongest model's quality by default) is
a horizontal line, with the cheapest point at which each highlighted router reaches it marked on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from agents.studies.summary import Comparison

__all__ = ["FAMILIES", "comparison_figure", "family_of", "plot_comparison", "router_styles"]

#: Router families of the plot, in legend order, with the routers each holds (by the studies' names).
FAMILIES: dict[str, tuple[str, ...]] = {
    "bandits": ("linucb", "thompson", "epsilon-greedy", "softmax"),
    "predictive": ("knn", "mlp", "logistic", "matrix-factorization"),
    "PPO": ("ppo", "ppo-conditioned"),
    "table / cluster": ("task-table", "cluster", "select-router"),
    "cascades": ("threshold-cascade", "cascade-bandit"),
    "PPO cascades": ("ppo-cascade", "ppo-free"),
    "single-shot": ("router-linucb", "router-ppo"),
    "baselines": ("random", "best-single"),
}
#: One colour per family, far apart (no two greens).
_COLOURS = {
    "bandits": "tab:blue",
    "predictive": "tab:orange",
    "PPO": "tab:red",
    "table / cluster": "tab:purple",
    "cascades": "tab:green",
    "PPO cascades": "tab:brown",
    "single-shot": "tab:cyan",
    "baselines": "tab:gray",
    "other": "tab:olive",
}
_FAINT_STYLES = ("--", ":", "-.")


def family_of(router: str) -> str:
    """The plot family of ``router`` (by name; routers named like a table or a cluster router join that one)."""
    for family, members in FAMILIES.items():
        if router in members:
            return family
    if "table" in router or "cluster" in router:
        return "table / cluster"
    return "other"


@dataclass(frozen=True)
class Style:
    """How one router's curve is drawn."""

    family: str
    color: str
    highlighted: bool
    label: str
    linestyle: str = "-"

    def line_kwargs(self) -> dict[str, Any]:
        if self.highlighted:
            return {"color": self.color, "lw": 2.2, "alpha": 1.0, "marker": "o", "ms": 4, "zorder": 4}
        return {
            "color": self.color,
            "lw": 1.0,
            "alpha": 0.45,
            "ls": self.linestyle,
            "marker": None,
            "zorder": 2,
        }


def router_styles(table: pd.DataFrame) -> dict[str, Style]:
    """One :class:`Style` per router of a study's ``table`` (the oracle excluded): the best of each family by
    ``gap_closed`` (AIQ where that is not a number) is highlighted; the baselines never are."""
    rows = table[table["router"] != "oracle"]
    score = rows["gap_closed"].where(np.isfinite(rows["gap_closed"]), rows["aiq"])
    by_family: dict[str, list[tuple[str, float]]] = {}
    for router, value in zip(rows["router"], score):
        by_family.setdefault(family_of(str(router)), []).append((str(router), float(value)))
    styles: dict[str, Style] = {}
    for family, members in by_family.items():
        best = max(members, key=lambda m: -np.inf if np.isnan(m[1]) else m[1])[0]
        faint = 0
        for router, value in members:
            gap = "" if np.isnan(value) else f", gap closed {value:.3f}"
            if router == best and family != "baselines":
                styles[router] = Style(family, _COLOURS[family], True, f"{router} (best {family}{gap})")
            else:
                ls = _FAINT_STYLES[faint % len(_FAINT_STYLES)]
                faint += 1
                styles[router] = Style(family, _COLOURS[family], False, f"{router}{gap}", ls)
    return styles


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write ``comparison``'s plot as PNG to ``path``; return it."""
    import matplotlib.pyplot as plt

    fig = comparison_figure(comparison)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def comparison_figure(comparison: Comparison) -> Any:
    """The plot of ``comparison`` as a matplotlib ``Figure`` (one panel, or two for two-model sets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = len(comparison.models) == 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(16 if two else 10, 6.2), squeeze=False)
    styles = router_styles(comparison.table)
    _cost_quality_panel(axes[0, 0], comparison, styles)
    if two:
        _share_panel(axes[0, 1], comparison, styles)
    # One legend for both panels, outside them, so that it hides no curve.
    _legend(axes[0, -1], axes[0, 0])
    fig.tight_layout()
    return fig


def _draw_routers(ax: Any, comparison: Comparison, styles: dict[str, Style], x: str) -> None:
    """Every router's curve of ``mean_quality`` against column ``x``; single points are labelled beside them."""
    # Faint curves first, so the highlighted ones lie on top.
    for router in sorted(styles, key=lambda r: styles[r].highlighted):
        style = styles[router]
        pts = comparison.points[comparison.points["router"] == router].sort_values(x)
        if len(pts[[x, "mean_quality"]].round(12).drop_duplicates()) == 1:
            # One operating point (whatever λ: the random router) is a labelled dot, not an invisible line.
            xy = (float(pts[x].iloc[0]), float(pts["mean_quality"].iloc[0]))
            ax.scatter(*xy, color=style.color, s=36, zorder=5, marker="D", label=style.label)
            ax.annotate(router, xy, fontsize=8, color=style.color, xytext=(6, 4), textcoords="offset points")
            continue
        ax.plot(pts[x], pts["mean_quality"], label=style.label, **style.line_kwargs())


def _target_line(ax: Any, comparison: Comparison, styles: dict[str, Style], x_of_cost: bool) -> None:
    info = comparison.info
    target = info.get("target_quality")
    if target is None or not np.isfinite(target):
        return
    share = info.get("quality_target", 0.95)
    ax.axhline(
        target, color="black", lw=0.9, ls=(0, (6, 3)), alpha=0.7, zorder=1,
        label=f"target: {share:.0%} of {info.get('strongest', 'the strongest model')} ({target:.3f})",
    )  # fmt: skip
    if not x_of_cost:
        return
    table = comparison.table.set_index("router")
    for router, style in styles.items():
        cost = table.loc[router, "cost_at_target_usd"] if router in table.index else np.nan
        if style.highlighted and np.isfinite(cost):
            ax.scatter(cost, target, marker="v", s=60, color=style.color, edgecolor="black", lw=0.6, zorder=6)


def _cost_quality_panel(ax: Any, comparison: Comparison, styles: dict[str, Style]) -> None:
    _draw_routers(ax, comparison, styles, "mean_cost_usd")
    oc = comparison.oracle_curve
    ax.plot(oc[:, 0], oc[:, 1], color="black", lw=1.5, ls="--", label="oracle", zorder=3)
    s = comparison.singles
    ax.scatter(
        s["mean_cost_usd"], s["mean_quality"], marker="*", s=140, c="black", zorder=7, label="single models"
    )
    for _, row in s.iterrows():
        ax.annotate(
            str(row["model"]),
            (row["mean_cost_usd"], row["mean_quality"]),
            fontsize=7,
            xytext=(4, -8),
            textcoords="offset points",
        )
    _target_line(ax, comparison, styles, x_of_cost=True)
    costs = np.concatenate([s["mean_cost_usd"].to_numpy(), oc[:, 0]])
    costs = costs[costs > 0]
    log = bool(costs.size and costs.max() / costs.min() > 20)
    if log:
        ax.set_xscale("log")
    # Room right of the dearest model for its name (the legend starts at the right edge).
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 2.5 if log else hi + 0.15 * (hi - lo))
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{comparison.name}: cost–quality on the test split (▼: cheapest point at the target)")
    ax.grid(alpha=0.3)


def _share_panel(ax: Any, comparison: Comparison, styles: dict[str, Style]) -> None:
    info = comparison.info
    strong = info["strong_model"]
    _draw_routers(ax, comparison, styles, f"share_{strong}")
    wq, sq = info["weak_quality"], info["strong_quality"]
    b, oq = info["oracle_strong_share"], info["oracle_quality"]
    ax.plot([0, b, 1], [wq, oq, oq], color="black", ls="--", label="oracle")
    ax.plot([0, 1], [wq, sq], ":", color="grey", label="random mix")
    _target_line(ax, comparison, styles, x_of_cost=False)
    ax.set_xlabel(f"share of calls to {strong}")
    ax.set_ylabel("mean quality")
    ax.set_title("quality against strong-model calls (RouteLLM view)")
    ax.grid(alpha=0.3)


def _legend(ax: Any, source: Any) -> None:
    """The legend of ``source``'s artists (and any extra ones of ``ax``), right of ``ax``: highlighted routers
    first, then the references, then the faint routers."""
    handles, labels = source.get_legend_handles_labels()
    if ax is not source:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda i: (0 if "(best " in labels[i] else 1, i))
    ax.legend(
        [handles[i] for i in order], [labels[i] for i in order], fontsize=7.5, loc="upper left",
        bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, framealpha=0.9,
    )  # fmt: skip
