"""Data-layer benchmark: RouteLLM MMLU load time and the memory of a large `LoggedDataset`.

1. Load time of all RouteLLM MMLU rows (14,042 prompts × 2 models, 57 CSV files) through ``load_routellm``
   (target < 2 s), against a reference measured in the same run: reading the same CSV files with pandas alone.
2. Memory of a `LoggedDataset` of 1M queries × 11 models with 16 features, tokens, latency, signal and query ids
   (target < 1 GB): the bytes of its arrays, and the peak RSS of a fresh process that builds it, against the
   peak RSS of the same process before building (interpreter + numpy + pandas).

Run:  python experiments/bench_data.py [--root ../shared/datasets] [--n-queries 1000000] [--n-models 11]
Writes experiments/results/bench_data.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import timed_pair

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "datasets"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder holding routellm/")
parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
parser.add_argument("--n-queries", type=int, default=1_000_000)
parser.add_argument("--n-models", type=int, default=11)
parser.add_argument("--n-features", type=int, default=16)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_data.csv")
parser.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_large(n: int, k: int, d: int, seed: int) -> dict[str, float]:
    """Build the large dataset in this process; return its array bytes and the peak RSS before and after."""
    from routing_env.data import LoggedDataset

    before = peak_rss_mb()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    quality = (rng.random((n, k)) < 0.7).astype(np.float64)
    input_tokens = rng.integers(10, 2000, size=(n, 1)).astype(np.float32).repeat(k, axis=1)
    output_tokens = rng.integers(1, 1000, size=(n, k)).astype(np.float32)
    cost = (input_tokens * 1e-6 + output_tokens * 3e-6).astype(np.float64)
    parts = {
        "quality": quality,
        "cost": cost,
        "features": rng.normal(size=(n, d)).astype(np.float32),
        "latency": rng.gamma(2.0, 1.0, size=(n, k)).astype(np.float32),
        "signal": rng.random((n, k)).astype(np.float32),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }
    # Read-only arrays of the canonical dtypes are shared by LoggedDataset instead of copied.
    for a in parts.values():
        a.setflags(write=False)
    del quality, cost, input_tokens, output_tokens
    ds = LoggedDataset(
        models=tuple(f"model-{j}" for j in range(k)),
        query_ids=np.array([f"q{i:07d}" for i in range(n)], dtype=object),
        **parts,  # type: ignore[arg-type]
    )
    del parts
    build_s = time.perf_counter() - t0
    arrays = [
        ds.quality,
        ds.cost,
        ds.observed,
        ds.features,
        ds.latency,
        ds.signal,
        ds.input_tokens,
        ds.output_tokens,
    ]
    numeric_bytes = sum(a.nbytes for a in arrays if a is not None)
    ids_bytes = ds.query_ids.nbytes + sum(sys.getsizeof(q) for q in ds.query_ids)
    return {
        "numeric_mb": numeric_bytes / 2**20,
        "query_id_mb": ids_bytes / 2**20,
        "rss_before_mb": before,
        "rss_peak_mb": peak_rss_mb(),
        "build_s": build_s,
    }


def time_routellm(root: Path, repeats: int) -> dict[str, float]:
    from routing_env.data import load_routellm

    folder = root / "routellm"
    files = sorted((folder / "mmlu_responses").glob("mmlu_*.csv"))

    def pandas_only() -> int:
        return len(pd.concat([pd.read_csv(f) for f in files], ignore_index=True))

    def loader() -> int:
        return load_routellm(folder, "mmlu").n_queries

    t_loader, t_pandas, _ = timed_pair(loader, pandas_only, repeats)
    return {
        "pandas_read_csv_s": t_pandas,
        "pandas_read_csv_rows": pandas_only(),
        "load_routellm_s": t_loader,
        "load_routellm_rows": loader(),
    }


def main() -> None:
    args = parser.parse_args()
    if args._memory_child:
        print(json.dumps(build_large(args.n_queries, args.n_models, args.n_features, args.seed)))
        return
    rows: list[tuple[str, float, str]] = []

    if (args.root / "routellm").is_dir():
        t = time_routellm(args.root, args.repeats)
        ratio = t["load_routellm_s"] / t["pandas_read_csv_s"]
        print(
            f"RouteLLM MMLU: load_routellm {t['load_routellm_s']:.3f} s for {int(t['load_routellm_rows']):,} queries "
            f"(target < 2 s: {'met' if t['load_routellm_s'] < 2 else 'NOT met'}); pandas read_csv of the same "
            f"{int(t['pandas_read_csv_rows']):,} rows {t['pandas_read_csv_s']:.3f} s; ratio {ratio:.2f}x "
            f"(median of {args.repeats})"
        )
        rows += [
            ("routellm_mmlu_load_s", t["load_routellm_s"], "< 2"),
            ("routellm_mmlu_pandas_reference_s", t["pandas_read_csv_s"], ""),
            ("routellm_mmlu_ratio", ratio, ""),
        ]
    else:
        print(f"RouteLLM MMLU: skipped, {args.root / 'routellm'} not found (pass --root)")

    # A fresh process, so that the peak RSS belongs to the large dataset alone.
    child = subprocess.run(
        [sys.executable, __file__, "--_memory-child", "--n-queries", str(args.n_queries),
         "--n-models", str(args.n_models), "--n-features", str(args.n_features), "--seed", str(args.seed)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    m = json.loads(child.stdout.strip().splitlines()[-1])
    total = m["numeric_mb"] + m["query_id_mb"]
    growth = m["rss_peak_mb"] - m["rss_before_mb"]
    print(
        f"LoggedDataset {args.n_queries:,} queries x {args.n_models} models, {args.n_features} features: arrays "
        f"{m['numeric_mb']:.0f} MiB numeric + {m['query_id_mb']:.0f} MiB query ids = {total:.0f} MiB "
        f"(target < 1024 MiB: {'met' if total < 1024 else 'NOT met'}); peak RSS {m['rss_peak_mb']:.0f} MiB "
        f"(reference: {m['rss_before_mb']:.0f} MiB before building, so +{growth:.0f} MiB "
        f"including the generator's temporaries; target < 1024 MiB: {'met' if m['rss_peak_mb'] < 1024 else 'NOT met'}); built in {m['build_s']:.1f} s"
    )
    rows += [
        ("large_dataset_array_mib", total, "< 1024"),
        ("large_dataset_peak_rss_mib", m["rss_peak_mb"], ""),
        ("large_dataset_rss_before_mib", m["rss_before_mb"], ""),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["figure", "value", "target"])
        writer.writerows((name, f"{value:.6g}", target) for name, value, target in rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
