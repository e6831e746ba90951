"""Benchmark of ``routing-env serve`` replicas: SQLite with one replica, PostgreSQL with one and with two, in one run.

Each configuration starts its replicas (``routing-env serve`` processes on loopback ports, LinUCB fitted on the
bundled sample) on a fresh store — a SQLite file, or a new database on the PostgreSQL server ``--store`` names —
and, at each concurrency level, times ``POST /v1/route`` and then ``POST /v1/feedback`` for those decisions,
spread round-robin over the replicas (each feedback goes to another replica than its route when there are two).
Reported per configuration, endpoint and concurrency: requests/s, p50 and p99 latency.

Replication lag (two replicas): while the feedback runs, a poller reads every replica's ``/healthz`` (its applied
log position) every ``--poll-ms``; a feedback's lag is the time from its acknowledgement (the client has it, so it
is committed) until the first poll at which every replica reports a position at or past it. The figures include
up to one poll interval and one ``/healthz`` round trip of resolution.

    python experiments/bench_server.py --store postgresql://user@127.0.0.1:5432/postgres
    python experiments/bench_replicas.py --store postgresql://… --requests 200     # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from _common import write_csv  # noqa: E402
from _processes import add_load_arguments, wait_until_ready  # noqa: E402
from bench_server import free_port, timed  # noqa: E402

FIELDS = ["config", "endpoint", "concurrency", "requests", "req_per_s", "p50_ms", "p99_ms"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--store", required=True, help="postgresql:// URL of a server where databases may be created"
    )
    add_load_arguments(p, requests=2000, concurrency="1,16")
    p.add_argument("--poll-ms", type=float, default=2.0, help="interval of the replication-lag poller")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "bench_replicas.csv"))
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- servers
def start_replica(store: str, policy: Path, log: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """``routing-env serve`` on a free loopback port, once ``/healthz`` answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "agents.cli", "serve", "--store", store, "--policy", str(policy)]
    cmd += ["--port", str(port), "--checkpoint-every", "1000"]
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=fh)
    return port, wait_until_ready(proc, port, f"a replica (log: {log})")


def new_database(server_url: str) -> tuple[str, str]:
    """A new database on the server of ``server_url``: (its URL, its name)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name)), name


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------------- load
async def poll_positions(
    ports: list[int], every_s: float, samples: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    """Append ``(time, lowest applied position over the replicas)`` every ``every_s`` until ``stop``."""
    import httpx

    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            positions = [
                (await http.get(f"http://127.0.0.1:{p}/healthz")).json()["log_position"] for p in ports
            ]
            samples.append((time.perf_counter(), min(positions)))
            await asyncio.sleep(every_s)


def lags_ms(seqs: np.ndarray, acked: np.ndarray, samples: list[tuple[float, int]]) -> np.ndarray:
    """Per feedback: ms from its acknowledgement to the first poll at which every replica had applied it."""
    times = np.array([t for t, _ in samples])
    lowest = np.maximum.accumulate(np.array([p for _, p in samples]))
    out = []
    for seq, t in zip(seqs, acked):
        i = int(np.searchsorted(lowest, seq))  # first poll with every replica at or past seq
        if i < len(times):
            j = max(i, int(np.searchsorted(times, t)))
            out.append((times[j] - t) * 1e3 if j < len(times) else np.nan)
    return np.array(out)


def measure(
    ports: list[int],
    config: str,
    level: int,
    features: list[bytes],
    args: argparse.Namespace,
    rows: list[dict],
) -> np.ndarray:
    """Time routes then their feedback at ``level``; append the rows; return the lags (ms) for two replicas."""
    elapsed, lat, responses, _ = asyncio.run(timed(ports, "/v1/route", features, level))
    rows.append(_row(config, "route", level, elapsed, lat))
    rng = np.random.default_rng(level)
    bodies = [
        json.dumps(
            {"decision_id": json.loads(r)["decision_id"], "quality": float(rng.random()), "cost": 1e-4}
        ).encode()
        for r in responses
    ]

    async def feedback() -> tuple[float, np.ndarray, list[bytes], np.ndarray, list[tuple[float, int]]]:
        samples: list[tuple[float, int]] = []
        stop = asyncio.Event()
        poller = (
            asyncio.create_task(poll_positions(ports, args.poll_ms / 1e3, samples, stop))
            if len(ports) > 1
            else None
        )
        result = await timed(ports, "/v1/feedback", bodies, level, offset=1)
        if poller is not None:
            await asyncio.sleep(0.5)  # let the last entries reach every replica
            stop.set()
            await poller
        return (*result, samples)

    elapsed, lat, responses, acked, samples = asyncio.run(feedback())
    rows.append(_row(config, "feedback", level, elapsed, lat))
    if len(ports) == 1:
        return np.array([])
    seqs = np.array([json.loads(r)["seq"] for r in responses])
    return lags_ms(seqs, acked, samples)


def _row(config: str, endpoint: str, level: int, elapsed: float, lat: np.ndarray) -> dict[str, object]:
    return {
        "config": config,
        "endpoint": endpoint,
        "concurrency": level,
        "requests": len(lat),
        "req_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
    }


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    from agents.routers import LinUCB
    from routing_env.data import load_sample

    sample = load_sample()
    rng = np.random.default_rng(args.seed)
    policy = LinUCB(alpha=0.5, epsilon=0.05, seed=args.seed).fit(sample, cost_weight=0.5)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        policy_dir = policy.save(tmp / "policy")
        for config, n in (("sqlite-1", 1), ("postgres-1", 1), ("postgres-2", 2)):
            if config.startswith("sqlite"):
                store, name = str(tmp / "bench.db"), None
            else:
                store, name = new_database(args.store)
            procs: list[subprocess.Popen[bytes]] = []
            try:
                ports = []
                for k in range(n):
                    port, proc = start_replica(store, policy_dir, tmp / f"{config}-{k}.log")
                    ports.append(port)
                    procs.append(proc)
                for level in levels:
                    picks = rng.integers(sample.n_queries, size=args.requests)
                    features = [json.dumps({"features": sample.features[r].tolist()}).encode() for r in picks]
                    lags = measure(ports, config, level, features, args, rows)
                    if lags.size:
                        rows.append(
                            {
                                "config": config,
                                "endpoint": "replication_lag",
                                "concurrency": level,
                                "requests": int(np.isfinite(lags).sum()),
                                "p50_ms": round(float(np.nanpercentile(lags, 50)), 3),
                                "p99_ms": round(float(np.nanpercentile(lags, 99)), 3),
                            }
                        )
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(timeout=30)
                if name is not None:
                    drop_database(args.store, name)
    print(f"{'config':<12} {'endpoint':<16} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['config']:<12} {r['endpoint']:<16} {r['concurrency']:>4} {r.get('req_per_s', ''):>9} "
            f"{r['p50_ms']:>8} {r['p99_ms']:>8}"
        )
    write_csv(Path(args.out), rows, FIELDS)
    return rows


if __name__ == "__main__":
    main()
