"""What a decision store's writes cost, on SQLite and on PostgreSQL, and what the PostgreSQL log's serialised
appends cost when several processes write at once.

Timed, per store (each call returns only after its commit, as the router needs):

1. ``decision``: ``insert_decision`` one at a time;
2. ``feedback``: ``insert_feedback`` one at a time (PostgreSQL: an append to the log at the next position, taken
   under the head row's lock);
3. ``group16``: 16 decisions and their 16 feedbacks per group commit (``begin_deferred`` … ``commit_group``), what
   the HTTP service does under concurrent load; the rate counts writes (decisions + feedbacks) per second;
4. PostgreSQL only, ``appenders``: ``--writers`` processes appending feedback at once (``seq=0``: the store assigns
   the position). Appends are serialised by design, so the total rate stays near one process's: this is the price
   of gap-free, commit-ordered positions.

Reported: writes per second and p50/p99 latency (ms) of one call (of one group commit for ``group16``). The
PostgreSQL part runs in a schema of its own (``routing_env_bench_<pid>``), dropped at the end; its figures depend
on the server's durability settings (``fsync``, ``synchronous_commit``), which are printed.

    python experiments/bench_store.py --postgres postgresql://user@localhost/db   # SQLite and PostgreSQL
    python experiments/bench_store.py --n 200                                     # SQLite only, quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from _common import write_csv

from agents.online import open_store
from agents.online.stores.base import Decision, DecisionStore, Feedback

MODELS = ("a", "b", "c")
D = 16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="timed writes per measurement")
    p.add_argument("--postgres", help="a PostgreSQL database URL (password from PGPASSWORD or ~/.pgpass)")
    p.add_argument("--writers", default="1,4", help="comma-separated numbers of appending processes")
    p.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_store.csv"))
    return p.parse_args()


def decision(seq: int, rng: np.random.Generator) -> Decision:
    probs = rng.dirichlet(np.ones(len(MODELS)))
    action = int(rng.integers(len(MODELS)))
    return Decision(
        f"{seq:012x}{rng.bytes(10).hex()}", seq, None, time.time(), "v1", "route", MODELS[action], action,
        float(probs[action]), MODELS, probs, rng.normal(size=D).astype(np.float32),
    )  # fmt: skip


def feedback(d: Decision, seq: int) -> Feedback:
    return Feedback(seq, d.decision_id, time.time(), "client", 0.7, 1e-4, 0.4, 0.69, True, "v1")


def summary(store: str, measure: str, writers: int, writes: int, seconds: float, lat: list[float]) -> dict:
    ms = np.array(lat) * 1e3
    return {
        "store": store,
        "measure": measure,
        "writers": writers,
        "writes": writes,
        "per_second": round(writes / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def timed_calls(calls: list, n: int) -> tuple[float, list[float]]:
    """Seconds for all ``calls`` and the latency of each."""
    lat = []
    t0 = time.perf_counter()
    for call in calls[:n]:
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    return time.perf_counter() - t0, lat


def bench_store(name: str, store: DecisionStore, n: int, rng: np.random.Generator) -> list[dict]:
    """The three single-process measurements on ``store`` (fresh, ``v1`` recorded)."""
    rows = []
    logged = [decision(seq, rng) for seq in range(1, n + 1)]
    seconds, lat = timed_calls([lambda d=d: store.insert_decision(d) for d in logged], n)
    rows.append(summary(name, "decision", 1, n, seconds, lat))
    base = store.log_position()
    appends = [lambda d=d, k=k: store.insert_feedback(feedback(d, base + k)) for k, d in enumerate(logged, 1)]
    seconds, lat = timed_calls(appends, n)
    rows.append(summary(name, "feedback", 1, n, seconds, lat))
    groups, lat = n // 16, []
    head = store.log_position()
    t0 = time.perf_counter()
    for g in range(groups):
        t = time.perf_counter()
        store.begin_deferred()
        batch = [decision(n + 16 * g + j + 1, rng) for j in range(16)]
        for d in batch:
            store.insert_decision(d)
        for d in batch:
            head += 1
            store.insert_feedback(feedback(d, head))
        group = store.end_deferred()
        store.commit_group()
        assert group is not None and store.group_error(group) is None
        lat.append(time.perf_counter() - t)
    rows.append(summary(name, "group16", 1, 32 * groups, time.perf_counter() - t0, lat))
    return rows


def append_worker(url: str, first_seq: int, n: int, start: Any, out: Any) -> None:
    """One appending process: log ``n`` decisions numbered from ``first_seq``, say it is ready, wait for ``start``, append their feedback and
    report ``(start s, end s, latencies)``."""
    store = open_store(url)
    rng = np.random.default_rng(first_seq)
    mine = [decision(first_seq + j, rng) for j in range(n)]
    for d in mine:
        store.insert_decision(d)
    out.put("ready")
    start.wait()
    t0 = time.perf_counter()
    lat = []
    for d in mine:
        t = time.perf_counter()
        store.insert_feedback(feedback(d, 0))
        lat.append(time.perf_counter() - t)
    out.put((t0, time.perf_counter(), lat))
    store.close()


def bench_appenders(url: str, writers: int, n: int, first_seq: int) -> dict:
    """``writers`` processes appending ``n`` feedbacks in total at once (decision numbers from ``first_seq``)."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=append_worker, args=(url, first_seq + w * n, n // writers, start, out))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process has logged its decisions: only the appends overlap
        assert out.get(timeout=600) == "ready"
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    seconds = max(r[1] for r in results) - min(r[0] for r in results)
    lat = [x for r in results for x in r[2]]
    return summary("postgresql", "appenders", writers, len(lat), seconds, lat)


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db", synchronous=args.synchronous)
        store.record_policy("v1", "bench", MODELS, D, time.time())
        rows += bench_store(f"sqlite ({args.synchronous})", store, args.n, rng)
        store.close()
    if args.postgres:
        import psycopg

        schema = f"routing_env_bench_{os.getpid()}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
            fsync, sync = (admin.execute(f"SHOW {k}").fetchone()[0] for k in ("fsync", "synchronous_commit"))
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options={quote(f'-csearch_path={schema}')}"
        try:
            print(f"PostgreSQL server: fsync={fsync}, synchronous_commit={sync}")
            store = open_store(url)
            store.record_policy("v1", "bench", MODELS, D, time.time())
            rows += bench_store("postgresql", store, args.n, rng)
            store.close()
            for i, writers in enumerate(int(w) for w in args.writers.split(",")):
                rows.append(bench_appenders(url, writers, args.n, first_seq=(i + 1) * 1_000_000_000))
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"{'store':<18} {'measure':<10} {'writers':>7} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['store']:<18} {r['measure']:<10} {r['writers']:>7} {r['per_second']:>10.0f} "
            f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
        )
    write_csv(Path(args.out), rows, list(rows[0]))


if __name__ == "__main__":
    main()
