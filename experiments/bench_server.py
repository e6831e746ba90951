"""Benchmark of the online router's HTTP service: the lean hot path against plain FastAPI endpoints, in one run.

Two servers run at once, each one uvicorn process on a loopback port (``experiments/_bench_app.py``: the production
app with the benchmark's reference endpoints, LinUCB fitted on the bundled sample, its own SQLite store), pinned
to one CPU while this load generator (an asyncio client with raw keep-alive HTTP/1.1 connections) runs on another:

- ``hot``: route and feedback on the lean hot path in front of FastAPI, as ``routing-env serve`` serves them;
- ``fastapi``: the same app with route and feedback through their plain FastAPI endpoints (pydantic body,
  response model).

For each round (the two servers alternate, so drift on a shared machine hits both alike) and concurrency level it
times ``POST /v1/route`` (a policy call on the request's features + a committed SQLite insert) and
``POST /v1/feedback`` (a committed insert + an online update) on both servers. Concurrent writes share one commit
(group commit); each request is acknowledged after its commit. On the hot server it also times the references:
``POST /v1/noop`` (server + network only, on the lean path; before and after, the mean is the reference),
``POST /v1/floor`` (the least a route can do on the same path: validate the body, one policy call, one sampled
model, one grouped insert of the decision's core fields into a table of its own, the JSON answer) and
``POST /v1/noop-fastapi`` (a plain FastAPI endpoint that does nothing).

Reported: requests/s and their ratio to the no-op, p50 and p99 latency per path, the hot path's gain over plain
FastAPI (requests/s and p99 at each concurrency: the figure that decides whether the hot path pays for itself),
and decisions persisted per second (every acknowledged route is a committed row; checked against each store) next
to the raw SQLite insert rate without HTTP.

    python experiments/bench_server.py                      # full run (~2 min)
    python experiments/bench_server.py --requests 200       # quick look
    python experiments/bench_server.py --store postgresql://user@host/db   # replicas: experiments/bench_replicas.py
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _processes import add_load_arguments, wait_until_ready

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(p, requests=4000, concurrency="1,16")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests before each measurement")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU this load generator is pinned to")
    p.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the two servers")
    p.add_argument(
        "--paths", default="hot,fastapi", help="how route and feedback are served: hot, fastapi or both"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "bench_server.csv"))
    return p.parse_args()


# ---------------------------------------------------------------------------------------------------- client
class Conn:
    """One keep-alive HTTP/1.1 connection speaking raw bytes (the client must cost far less than the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def run_level(
    port: int, path: str, bodies: list[bytes], concurrency: int, warmup: list[bytes]
) -> tuple[float, np.ndarray, list[bytes]]:
    """Send ``bodies`` to ``path`` over ``concurrency`` connections; (elapsed s, latencies s, responses)."""
    elapsed, latencies, responses, _ = await timed([port], path, bodies, concurrency, warmup=warmup)
    return elapsed, latencies, responses


async def timed(
    ports: list[int],
    path: str,
    bodies: list[bytes],
    concurrency: int,
    offset: int = 0,
    warmup: Sequence[bytes] = (),
) -> tuple[float, np.ndarray, list[bytes], np.ndarray]:
    """Send ``bodies[i]`` to server ``(i + offset) % len(ports)`` with ``concurrency`` requests in flight (after
    ``warmup``, untimed, to the first); (elapsed s, latencies s, responses, acknowledgement times on
    ``time.perf_counter``). A status other than 200 raises."""
    conns = [[await Conn.open(p) for _ in range(concurrency)] for p in ports]
    for i, body in enumerate(warmup):
        await conns[0][i % concurrency].post(path, body)
    latencies, acked = np.zeros(len(bodies)), np.zeros(len(bodies))
    responses: list[bytes] = [b""] * len(bodies)
    next_index = 0

    async def worker(k: int) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            status, payload = await conns[(i + offset) % len(ports)][k].post(path, bodies[i])
            acked[i] = time.perf_counter()
            latencies[i] = acked[i] - t0
            if status != 200:
                raise RuntimeError(f"{path} returned {status}: {payload[:200]!r}")
            responses[i] = payload

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    for row in conns:
        for c in row:
            c.close()
    return elapsed, latencies, responses, acked


# ---------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    store: Path, policy: Path, port: int, cpu: int, synchronous: str, path: str
) -> subprocess.Popen[bytes]:
    """``experiments/_bench_app.py`` serving ``policy`` with route and feedback on ``path``, once it answers."""
    cmd = [
        sys.executable, str(REPO / "experiments" / "_bench_app.py"), "--store", str(store), "--policy", str(policy),
        "--port", str(port), "--path", path, "--checkpoint-every", "1000", "--synchronous", synchronous,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}), stderr=subprocess.DEVNULL
    )
    return wait_until_ready(proc, port, f"the {path} server")


def sqlite_insert_rate(tmp: Path, n: int, synchronous: str) -> float:
    """Decisions per second that SQLiteDecisionStore commits one by one in process (no HTTP)."""
    from agents.online import Decision, SQLiteDecisionStore

    store = SQLiteDecisionStore(tmp / "raw.db", synchronous=synchronous)  # type: ignore[arg-type]
    store.record_policy("v1", "bench", ("a", "b"), 16, time.time())
    x = np.zeros(16, dtype=np.float32)
    p = np.array([0.5, 0.5])
    start = time.perf_counter()
    for i in range(1, n + 1):
        store.insert_decision(
            Decision(f"d{i}", i, None, time.time(), "v1", "route", "a", 0, 0.5, ("a", "b"), p, x)
        )
    rate = n / (time.perf_counter() - start)
    store.close()
    return rate


# ---------------------------------------------------------------------------------------------------- measurement
Timing = dict[
    tuple[str, str, int], list[tuple[float, np.ndarray]]
]  # (path, endpoint, c) → (elapsed s, latencies)


def measure_round(
    port: int,
    path: str,
    c: int,
    features: list[bytes],
    args: argparse.Namespace,
    rng: np.random.Generator,
    timing: Timing,
) -> int:
    """One round at concurrency ``c`` on the ``path`` server; returns the routes it acknowledged."""
    warm, timed = features[: args.warmup], features[args.warmup :]
    noop_body = [b"{}"] * args.requests

    def timed_run(endpoint: str, bodies: list[bytes], warmup: list[bytes]) -> list[bytes]:
        elapsed, lat, out = asyncio.run(run_level(port, f"/v1/{endpoint}", bodies, c, warmup))
        timing.setdefault((path, endpoint, c), []).append((elapsed, lat))
        return out

    if path == "hot":
        timed_run("noop", noop_body, [b"{}"] * args.warmup)
        timed_run("floor", timed, warm)
    route_out = timed_run("route", timed, warm)
    ids = [json.loads(r)["decision_id"] for r in route_out]
    fb_bodies = [
        json.dumps({"decision_id": d, "quality": float(q), "cost": 1e-4}).encode()
        for d, q in zip(ids, rng.random(len(ids)))
    ]
    timed_run("feedback", fb_bodies, [])
    if path == "hot":
        timed_run("noop", noop_body, [])
        timed_run("noop-fastapi", noop_body, [b"{}"] * args.warmup)
    return len(timed) + len(warm)


def summarise(timing: Timing, requests: int) -> list[dict[str, object]]:
    """One CSV row per (path, endpoint, concurrency): requests/s over all its runs, p50 and p99 of every request."""
    noop = {
        c: requests * len(runs) / sum(e for e, _ in runs) for (p, e, c), runs in timing.items() if e == "noop"
    }
    rows: list[dict[str, object]] = []
    for (path, endpoint, c), runs in timing.items():
        rps = len(runs) * requests / sum(elapsed for elapsed, _ in runs)
        lat = np.concatenate([lat for _, lat in runs])
        rows.append(
            {
                "path": path,
                "endpoint": endpoint,
                "concurrency": c,
                "requests": len(lat),
                "req_per_s": round(rps, 1),
                "ratio_to_noop": round(rps / noop[c], 3) if c in noop else "",
                "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
            }
        )
    return rows


def report(rows: list[dict[str, object]], levels: list[int], paths: list[str]) -> None:
    print(f"{'path':<9}{'endpoint':<14}{'conc':>5}{'req/s':>10}{'÷noop':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for r in rows:
        print(
            f"{r['path']:<9}{r['endpoint']:<14}{r['concurrency']:>5}{r['req_per_s']:>10}{r['ratio_to_noop']:>8}"
            f"{r['p50_ms']:>9}{r['p99_ms']:>9}"
        )
    by = {(r["path"], r["endpoint"], r["concurrency"]): r for r in rows}
    if set(paths) == {"hot", "fastapi"}:
        print(
            "hot path against plain FastAPI endpoints (the figure that decides whether the hot path is kept):"
        )
        for endpoint in ("route", "feedback"):
            for c in levels:
                hot, plain = by["hot", endpoint, c], by["fastapi", endpoint, c]
                gain = float(hot["req_per_s"]) / float(plain["req_per_s"]) - 1  # type: ignore[arg-type]
                p99 = float(hot["p99_ms"]) / float(plain["p99_ms"])  # type: ignore[arg-type]
                p50 = float(hot["p50_ms"]) / float(plain["p50_ms"])  # type: ignore[arg-type]
                print(
                    f"  {endpoint:<9}c={c:<3} requests/s {gain:+.0%}, p50 ×{p50:.2f}, p99 ×{p99:.2f} "
                    f"({hot['req_per_s']} vs {plain['req_per_s']}/s; p99 {hot['p99_ms']} vs {plain['p99_ms']} ms)"
                )
    if "hot" in paths:
        for c in levels:
            floor, route = by["hot", "floor", c], by["hot", "route", c]
            print(
                f"c={c}: the floor (the least a route can do) reaches {floor['ratio_to_noop']} of the no-op; "
                f"route reaches {float(route['req_per_s']) / float(floor['req_per_s']):.2f} of the floor"  # type: ignore[arg-type]
            )
    for path in paths:
        for endpoint in ("route", "feedback"):
            checks = []
            if 1 in levels:
                checks.append(f"p50 ≤ 1 ms at c=1: {float(by[path, endpoint, 1]['p50_ms']) <= 1.0}")  # type: ignore[arg-type]
            if 16 in levels:
                checks.append(f"p99 ≤ 10 ms at c=16: {float(by[path, endpoint, 16]['p99_ms']) <= 10.0}")  # type: ignore[arg-type]
            if checks:
                print(f"  [{path} {endpoint}] " + "; ".join(checks))


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    if "--store" in sys.argv[1:]:  # SQLite against PostgreSQL with one and two replicas
        from bench_replicas import main as bench_replicas

        bench_replicas(sys.argv[1:])
        return
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - {"hot", "fastapi"}:
        raise SystemExit(f"--paths must list hot and/or fastapi, got {args.paths!r}")
    ncpu = os.cpu_count() or 1
    pinned = args.server_cpu != args.client_cpu and max(args.server_cpu, args.client_cpu) < ncpu
    if pinned:
        os.sched_setaffinity(0, {args.client_cpu})
    else:
        print(f"note: cannot pin server and client to separate CPUs on {ncpu} CPU(s); running unpinned")

    from agents.online import SQLiteDecisionStore
    from agents.routers import LinUCB
    from routing_env.data import load_sample

    sample = load_sample()
    rng = np.random.default_rng(args.seed)
    policy = LinUCB(alpha=0.5, epsilon=0.05, seed=args.seed).fit(sample, cost_weight=0.5)
    rows = rng.integers(sample.n_queries, size=args.requests + args.warmup)
    features = [json.dumps({"features": sample.features[r].tolist()}).encode() for r in rows]

    timing: Timing = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        policy_dir = policy.save(tmp / "policy")
        servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        routed = dict.fromkeys(paths, 0)
        try:
            for path in paths:
                port = free_port()
                cpu = args.server_cpu if pinned else 0
                servers[path] = (
                    port,
                    start_server(tmp / f"{path}.db", policy_dir, port, cpu, args.synchronous, path),
                )
            for _ in range(args.rounds):
                for c in levels:
                    for path in paths:
                        routed[path] += measure_round(servers[path][0], path, c, features, args, rng, timing)
        finally:
            for _, proc in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        for path in paths:
            persisted = SQLiteDecisionStore(tmp / f"{path}.db").max_decision_seq()
            if persisted != routed[path]:
                raise RuntimeError(
                    f"{routed[path]} routes were acknowledged by the {path} server but its store holds {persisted}"
                )
        raw_rate = sqlite_insert_rate(tmp, 2000, args.synchronous)

    print(f"\nservers on CPU {args.server_cpu}, load generator on CPU {args.client_cpu} (pinned: {pinned}); "
          f"SQLite synchronous={args.synchronous}; {args.rounds} rounds × {args.requests} timed requests per cell")  # fmt: skip
    results = summarise(timing, args.requests)
    report(results, levels, paths)
    best_route = max(float(r["req_per_s"]) for r in results if r["endpoint"] == "route")  # type: ignore[arg-type]
    print(
        f"decisions persisted per second over HTTP: {best_route:.0f} (every acknowledged route is in its store)"
    )
    print(f"raw SQLite commits per second (SQLiteDecisionStore.insert_decision, no HTTP): {raw_rate:.0f}")
    results.append(
        {
            "path": "",
            "endpoint": "sqlite_insert",
            "concurrency": 1,
            "requests": 2000,
            "req_per_s": round(raw_rate, 1),
        }
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["path", "endpoint", "concurrency", "requests", "req_per_s", "ratio_to_noop", "p50_ms", "p99_ms"]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
