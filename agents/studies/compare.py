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
``task-table`` (the best model per task: the floor every learned router must clear), ``cluster`` (the clustering
router with empirical-Bayes shrinkage), ``select-router`` (:func:`agents.select_router` over its default candidates;
these three get the task one-hot appended when the features lack it, and cross-validate over the study's λ grid),
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
from pathlib import Path
from typing import Any

import numpy as np

from agents.studies.config import (
    BANDITS,
    DEFAULT_COST_WEIGHTS,
    FEATURIZERS,
    LEARNED,
    ROUTERS,
    CompareConfig,
    prepare_splits,
    scaled_config,
)
from agents.studies.runs import CASCADE_METHODS, Log, Run, run_cascade_method, run_router
from agents.studies.summary import Comparison, summarise
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError, PartialInformationError

__all__ = [
    "BANDITS",
    "CASCADE_METHODS",
    "DEFAULT_COST_WEIGHTS",
    "FEATURIZERS",
    "LEARNED",
    "ROUTERS",
    "CompareConfig",
    "Comparison",
    "compare_cascades",
    "compare_routers",
    "prepare_splits",
    "run_cascade_study",
    "run_frontier_study",
    "scaled_config",
]


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
    _check_splits(train, test)
    if train.models != test.models:
        raise ConfigurationError(f"train and test have different models: {train.models} vs {test.models}")
    if train.n_features != test.n_features or train.n_features == 0:
        raise ConfigurationError(
            f"train and test need the same non-zero feature width, got {train.n_features} and {test.n_features}"
        )
    runs = _run_all(cfg.routers, run_router, train, test, cfg, name, log)
    return summarise(runs, train, test, cfg, name=name, features=features)


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
    unknown = [m for m in methods if m not in CASCADE_METHODS]
    if unknown or not methods:
        raise ConfigurationError(f"methods must be names from {list(CASCADE_METHODS)}, got {list(methods)}")
    _check_splits(train, test)
    for what, ds in (("train", train), ("test", test)):
        if ds.signal is None:
            raise ConfigurationError(f"the {what} split has no per-call signal, which cascades decide on")
    runs = _run_all(tuple(methods), run_cascade_method, train, test, cfg, name, log)
    result = summarise(runs, train, test, cfg, name=name, features=features, order=tuple(methods))
    result.info["study"] = "Cascade study"
    return result


def _check_splits(train: LoggedDataset, test: LoggedDataset) -> None:
    for what, ds in (("train", train), ("test", test)):
        if not ds.is_full_information:
            raise PartialInformationError(f"the {what} split must be full-information to be scored exactly")


def _run_all(
    names: Sequence[str],
    runner: Callable[[str, LoggedDataset, LoggedDataset, CompareConfig, Log], Run | None],
    train: LoggedDataset,
    test: LoggedDataset,
    cfg: CompareConfig,
    label: str,
    log: Log | None,
) -> list[Run]:
    """Run every family of ``names`` in turn, with progress messages; skipped families are left out."""
    say: Log = log if log is not None else (lambda _msg: None)
    runs: list[Run] = []
    for r in names:
        say(f"[{label}] {r} ...")
        t0 = time.perf_counter()
        run = runner(r, train, test, cfg, say)
        if run is not None:
            runs.append(run)
            say(f"[{label}] {r}: done in {time.perf_counter() - t0:.1f}s")
    return runs


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
    tables, the Markdown report and the PNG plot as ``<stem>_*.csv``, ``<stem>.md``, ``<stem>.png``
    (default stem ``frontier_<name>``).

    Returns the :class:`Comparison` and the written paths (empty without ``out_dir``).
    """

    def study(train: LoggedDataset, test: LoggedDataset, cfg: CompareConfig, features: str) -> Comparison:
        return compare_routers(train, test, cfg, name=name, features=features, log=log)

    return _run_study(dataset, name, out_dir, config, stem or f"frontier_{_slug(name)}", study)


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

    def study(train: LoggedDataset, test: LoggedDataset, cfg: CompareConfig, features: str) -> Comparison:
        return compare_cascades(train, test, cfg, methods=methods, name=name, features=features, log=log)

    return _run_study(dataset, name, out_dir, config, stem or f"cascade_{_slug(name)}", study)


def _run_study(
    dataset: LoggedDataset,
    name: str,
    out_dir: str | Path | None,
    config: CompareConfig | None,
    stem: str,
    study: Callable[[LoggedDataset, LoggedDataset, CompareConfig, str], Comparison],
) -> tuple[Comparison, dict[str, Path]]:
    cfg = config if config is not None else CompareConfig()
    train, test, features = prepare_splits(dataset, cfg)
    result = study(train, test, cfg, features)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        paths = result.save(out_dir, stem)
        meta = Path(out_dir) / f"{stem}_info.json"
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
