"""What the experiment scripts share: where the repository, its results and the third-party logs are; the
options, dataset and config of a router study; timing two functions against each other; writing a result
table as CSV.

The scripts import it as a sibling module (``from _common import …``): Python puts a script's own folder first on
the import path (the smoke tests' loader does the same).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from routing_env.data import LoggedDataset, load_dataset
from routing_env.data.loaders.canonical import DATASETS_ENV

if TYPE_CHECKING:
    from agents.studies.compare import CompareConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
#: The third-party logs beside the repository (read-only), used when neither an argument nor the environment
#: names a folder.
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def datasets_root(given: Path | None) -> Path:
    """The folder holding the third-party dataset folders: ``given``, else ``$ROUTING_ENV_DATASETS``, else
    ``../shared/datasets`` beside the repository."""
    return Path(given or os.environ.get(DATASETS_ENV) or SHARED_DATASETS)


def load_study_dataset(spec: str, root: Path | None) -> tuple[str, LoggedDataset]:
    """``(short name, dataset)`` of ``spec`` (a dataset name or a canonical file's path; the short name is the
    file's stem) read from :func:`datasets_root` of ``root``, after printing both."""
    dataset = load_dataset(spec, root=datasets_root(root))
    name = Path(spec).stem if Path(spec).suffix else spec
    print(f"{name}: {dataset}")
    return name, dataset


def add_study_arguments(
    p: argparse.ArgumentParser, cost_weights: Sequence[float], ppo_timesteps: int, *, test_size: bool = True
) -> None:
    """Add the options every router study takes: ``--datasets-root``, ``--out``, ``--seed``, ``--test-size``
    (unless ``test_size`` is False), ``--cost-weights`` (default ``cost_weights``), ``--ppo-timesteps`` (default
    ``ppo_timesteps``) and ``--n-envs``."""
    p.add_argument("--datasets-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0)
    if test_size:
        p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--cost-weights", type=float, nargs="+", default=list(cost_weights))
    p.add_argument("--ppo-timesteps", type=int, default=ppo_timesteps, help="per per-λ PPO policy")
    p.add_argument("--n-envs", type=int, default=8)


def study_config(args: argparse.Namespace, **fields: Any) -> CompareConfig:
    """The study's :class:`~agents.studies.compare.CompareConfig`: the options of :func:`add_study_arguments`
    plus ``fields``."""
    # Imported here: the benchmarks that share this module need not load the studies.
    from agents.studies.compare import CompareConfig

    if "test_size" in args:
        fields.setdefault("test_size", args.test_size)
    return CompareConfig(
        cost_weights=tuple(args.cost_weights),
        seed=args.seed,
        ppo_timesteps=args.ppo_timesteps,
        n_envs=args.n_envs,
        **fields,
    )


def print_study(table: pd.DataFrame, paths: Mapping[str, Path], start: float, *more: pd.DataFrame) -> None:
    """Print a study's result ``table`` (without its index) and the ``more`` tables (with theirs), then say which
    files it wrote (``paths``: kind → path) and how long it took since ``start`` (a :func:`time.perf_counter`
    reading)."""
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(table.to_string(index=False))
        for extra in more:
            print(extra.to_string())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    print(f"total {time.perf_counter() - start:.0f}s")


def timed_pair(
    ours: Callable[[], object], ref: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Median seconds of ``ours`` and ``ref`` and the median of their per-repeat ratio. The two alternate, so a
    shared machine's load changes hit both alike."""
    ours()  # warm-up: first-touch page faults and lazy imports are not what we measure
    ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        ref()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_ref.append(t2 - t1)
    ratio = np.median(np.array(t_ours) / np.array(t_ref))
    return float(np.median(t_ours)), float(np.median(t_ref)), float(ratio)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` (one dict per row, keys ``fieldnames``) to ``path``, creating its folder, and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
