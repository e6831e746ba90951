"""Benchmark of the online router's HTTP service against a no-op endpoint of the same app, in the same run.

``routing-env serve`` (one uvicorn worker, LinUCB fitted on the bundled sample, SQLite store) runs on one CPU and
this load generator (an asyncio client with raw keep-alive HTTP/1.1 connections) on another, over loopback. For
each concurrency level the script times ``POST /v1/noop`` (server + network only: it reads the body and answers
JSON on the same lean path as the hot endpoints, which skip FastAPI's request handling), ``POST /v1/route`` (a
policy call on the request's features + a committed SQLite insert) and ``POST /v1/feedback`` (a committed insert
+ an online update), then ``/v1/noop`` again; the reference is the mean of the two no-op runs. Concurrent writes
share one commit (group commit); each request is acknowledged after its commit.

It also times ``POST /v1/floor``, the least a route can do on the same path (validate the body, one policy call,
one sampled model, one grouped insert of the decision's core fields, the JSON answer; no idempotency, output checks,
caches or counters), and prints how close ``/v1/route`` comes to it: the ratio that any route implementation could
reach on this machine.

Reported: requests/s and their ratio to the no-op (target ≥ 0.5), p50 and p99 latency (targets: p50 ≤ 1 ms at
concurrency 1, p99 ≤ 10 ms at concurrency 16), and decisions persisted per second (every acknowledged route is a
committed row; checked against the store) next to the raw SQLite insert rate without HTTP. For context it also
times ``POST /v1/noop-fastapi``, a plain FastAPI endpoint that does nothing, and prints the ratios to it.

    python experiments/bench_server.py                      # full run (~1 min)
    python experiments/bench_server.py --requests 200       # quick look
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
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--requests", type=int, default=4000, help="timed requests per endpoint and concurrency level"
    )
    p.add_argument("--warmup", type=int, default=200, help="untimed requests before each measurement")
    p.add_argument("--concurrency", default="1,16", help="comma-separated numbers of concurrent connections")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU this load generator is pinned to")
    p.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability")
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
    conns = [await Conn.open(port) for _ in range(concurrency)]
    for i, body in enumerate(warmup):
        await conns[i % concurrency].post(path, body)
    latencies = np.zeros(len(bodies))
    responses: list[bytes] = [b""] * len(bodies)
    next_index = 0

    async def worker(conn: Conn) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            status, payload = await conn.post(path, bodies[i])
            latencies[i] = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"{path} returned {status}: {payload[:200]!r}")
            responses[i] = payload

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return elapsed, latencies, responses


# ---------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, policy: Path, port: int, cpu: int, synchronous: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "agents.cli", "serve", "--store", str(store), "--policy", str(policy),
        "--port", str(port), "--bench-endpoints", "--checkpoint-every", "1000", "--synchronous", synchronous,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 120 s")


def sqlite_insert_rate(tmp: Path, n: int, synchronous: str) -> float:
    """Decisions per second that DecisionStore commits one by one in process (no HTTP)."""
    from agents.online.stores.sqlite import Decision, DecisionStore

    store = DecisionStore(tmp / "raw.db", synchronous=synchronous)  # type: ignore[arg-type]
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


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ncpu = os.cpu_count() or 1
    pinned = args.server_cpu != args.client_cpu and max(args.server_cpu, args.client_cpu) < ncpu
    if pinned:
        os.sched_setaffinity(0, {args.client_cpu})
    else:
        print(f"note: cannot pin server and client to separate CPUs on {ncpu} CPU(s); running unpinned")

    from agents.routers import LinUCB
    from routing_env.data import load_sample

    sample = load_sample()
    rng = np.random.default_rng(args.seed)
    policy = LinUCB(alpha=0.5, epsilon=0.05, seed=args.seed).fit(sample, cost_weight=0.5)
    rows = rng.integers(sample.n_queries, size=args.requests + args.warmup)
    features = [json.dumps({"features": sample.features[r].tolist()}).encode() for r in rows]

    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        policy_dir = policy.save(tmp / "policy")
        store = tmp / "store.db"
        port = free_port()
        server = start_server(store, policy_dir, port, args.server_cpu if pinned else 0, args.synchronous)
        routed = 0
        try:
            for c in levels:
                warm, timed = features[: args.warmup], features[args.warmup :]
                noop_body = [b"{}"] * args.requests
                level: dict[str, tuple[float, np.ndarray]] = {}
                t1, l1, _ = asyncio.run(run_level(port, "/v1/noop", noop_body, c, [b"{}"] * args.warmup))
                tfl, lfl, _ = asyncio.run(run_level(port, "/v1/floor", timed, c, warm))
                tr, lr, route_out = asyncio.run(run_level(port, "/v1/route", timed, c, warm))
                routed += len(timed) + len(warm)
                ids = [json.loads(r)["decision_id"] for r in route_out]
                quality = rng.random(len(ids))
                fb_bodies = [
                    json.dumps({"decision_id": d, "quality": float(q), "cost": 1e-4}).encode()
                    for d, q in zip(ids, quality)
                ]
                tf, lf, _ = asyncio.run(run_level(port, "/v1/feedback", fb_bodies, c, []))
                t2, l2, _ = asyncio.run(run_level(port, "/v1/noop", noop_body, c, []))
                tfa, lfa, _ = asyncio.run(
                    run_level(port, "/v1/noop-fastapi", noop_body, c, [b"{}"] * args.warmup)
                )
                noop_rps = 0.5 * (args.requests / t1 + args.requests / t2)
                level["noop"] = (noop_rps, np.concatenate([l1, l2]))
                level["noop-fastapi"] = (args.requests / tfa, lfa)
                level["floor"] = (args.requests / tfl, lfl)
                level["route"] = (args.requests / tr, lr)
                level["feedback"] = (args.requests / tf, lf)
                for endpoint, (rps, lat) in level.items():
                    results.append(
                        {
                            "endpoint": endpoint,
                            "concurrency": c,
                            "requests": args.requests,
                            "req_per_s": round(rps, 1),
                            "ratio_to_noop": round(rps / noop_rps, 3),
                            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
                            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
                        }
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        from agents.online import DecisionStore

        persisted = DecisionStore(store).max_decision_seq()
        if persisted != routed:
            raise RuntimeError(f"{routed} routes were acknowledged but the store holds {persisted} decisions")
        raw_rate = sqlite_insert_rate(tmp, 2000, args.synchronous)

    print(f"\nserver on CPU {args.server_cpu}, load generator on CPU {args.client_cpu} (pinned: {pinned}); "
          f"SQLite synchronous={args.synchronous}; {args.requests} timed requests per cell")  # fmt: skip
    by = {(r["endpoint"], r["concurrency"]): r for r in results}
    print(f"{'endpoint':<14}{'conc':>5}{'req/s':>10}{'÷noop':>8}{'÷fastapi':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        fastapi_rps = float(by["noop-fastapi", r["concurrency"]]["req_per_s"])  # type: ignore[arg-type]
        print(
            f"{r['endpoint']:<14}{r['concurrency']:>5}{r['req_per_s']:>10}{r['ratio_to_noop']:>8}"
            f"{float(r['req_per_s']) / fastapi_rps:>10.3f}{r['p50_ms']:>9}{r['p99_ms']:>9}"  # type: ignore[arg-type]
        )
    print(
        "÷noop: to the no-op on the hot endpoints' own path (the target's reference); ÷fastapi: to a plain "
        "FastAPI endpoint that does nothing"
    )
    checks = []
    for endpoint in ("route", "feedback"):
        for c in levels:
            checks.append((f"{endpoint} c={c} ratio ≥ 0.5", float(by[endpoint, c]["ratio_to_noop"]) >= 0.5))  # type: ignore[arg-type]
        if 1 in levels:
            checks.append((f"{endpoint} p50 ≤ 1 ms at c=1", float(by[endpoint, 1]["p50_ms"]) <= 1.0))  # type: ignore[arg-type]
        if 16 in levels:
            checks.append((f"{endpoint} p99 ≤ 10 ms at c=16", float(by[endpoint, 16]["p99_ms"]) <= 10.0))  # type: ignore[arg-type]
    for c in levels:
        floor = by["floor", c]
        print(
            f"c={c}: the floor (the least a route can do) reaches {floor['ratio_to_noop']} of the no-op; "
            f"route reaches {float(by['route', c]['req_per_s']) / float(floor['req_per_s']):.2f} of the floor"  # type: ignore[arg-type]
        )
    best_route = max(float(by["route", c]["req_per_s"]) for c in levels)  # type: ignore[arg-type]
    print(
        f"decisions persisted per second over HTTP: {best_route:.0f} (all {persisted} acknowledged routes in the store)"
    )
    print(f"raw SQLite commits per second (DecisionStore.insert_decision, no HTTP): {raw_rate:.0f}")
    for name, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {name}")
    results.append(
        {"endpoint": "sqlite_insert", "concurrency": 1, "requests": 2000, "req_per_s": round(raw_rate, 1)}
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh,
            fieldnames=[
                "endpoint",
                "concurrency",
                "requests",
                "req_per_s",
                "ratio_to_noop",
                "p50_ms",
                "p99_ms",
            ],
        )
        writer.writeheader()
        writer.writerows(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
