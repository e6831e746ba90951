"""What shadow evaluation costs the request path: route and feedback latency with no shadow and with two.

Two ``routing-env serve`` processes run at once on loopback ports, each with its own SQLite store and the same
live policy (LinUCB, ε = 0.1, fitted on 500 synthetic queries): one with no shadow, one with two shadows
registered (``POST /v1/shadows``: LinUCB fitted at another λ, and EpsilonGreedy). Rounds alternate between the
two servers, so drift on a shared machine hits both alike. Each round sends ``--requests`` route + feedback pairs
from each of ``--concurrency`` keep-alive connections (threads) and records the latency of every request.

Shadows are scored off the request path (a queue and a background thread, one policy call per shadow and batch,
one store transaction per batch), so what they can add is contention: the GIL and the store's write lock. The
script reports p50 and p99 of route and feedback on both servers, their differences, and checks that every
decision with feedback was scored by both shadows (the report's ``n_decisions``).

    python experiments/bench_shadows.py                      # full run
    python experiments/bench_shadows.py --requests 100       # quick look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _processes import add_load_arguments

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-shadows-token"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(
        p, requests=1000, concurrency="1,4", per="connection and round (route + feedback pairs)"
    )
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the two servers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "bench_shadows.json"))
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_policies(root: Path, seed: int) -> dict[str, Path]:
    """The live policy and the two shadows, fitted on the first 500 of 2,000 synthetic queries × 4 models."""
    from agents.routers import EpsilonGreedy, LinUCB
    from routing_env.data import make_synthetic

    data = make_synthetic(n_queries=2000, models=4, n_features=8, seed=seed).select(np.arange(500))
    return {
        "live": LinUCB(alpha=0.3, epsilon=0.1, seed=seed).fit(data, cost_weight=0.5).save(root / "live"),
        "cheap": LinUCB(alpha=0.3, epsilon=0.1, seed=seed).fit(data, cost_weight=2.0).save(root / "cheap"),
        "greedy": EpsilonGreedy(epsilon=0.2, seed=seed).fit(data, cost_weight=0.5).save(root / "greedy"),
    }


class Served:
    """One ``routing-env serve`` process on a loopback port."""

    def __init__(self, store: Path, policy: Path, root: Path) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        env = {**os.environ, "ROUTING_ENV_API_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
        self.log = store.with_suffix(".log").open("wb")
        args = ["serve", "--store", str(store), "--policy", str(policy), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", *args, "--policy-root", str(root), "--checkpoint-every", "1000"],
            env=env, stdout=self.log, stderr=self.log, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server on port {self.port} did not start")

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection(self.url, timeout=120)
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def load(url: str, connections: int, n: int, seed: int) -> dict[str, list[float]]:
    """``n`` route + feedback pairs on each of ``connections`` threads; every latency (s) by path."""
    out: dict[str, list[float]] = {"route": [], "feedback": []}
    lock = threading.Lock()
    errors: list[str] = []

    def run(worker: int) -> None:
        rng = np.random.default_rng([seed, worker])
        conn = http.client.HTTPConnection(url, timeout=60)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine: dict[str, list[float]] = {"route": [], "feedback": []}
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/route", json.dumps({"features": rng.normal(size=8).tolist()}))
                r = conn.getresponse()
                d = json.loads(r.read())
                mine["route"].append(time.perf_counter() - t0)
                if r.status != 200:
                    errors.append(f"route {r.status}: {d}")
                    return
                body = json.dumps(
                    {"decision_id": d["decision_id"], "quality": float(rng.random()), "cost": 0.0}
                )
                t0 = time.perf_counter()
                conn.request("POST", "/v1/feedback", body)
                r = conn.getresponse()
                r.read()
                mine["feedback"].append(time.perf_counter() - t0)
                if r.status != 200:
                    errors.append(f"feedback {r.status}")
                    return
        finally:
            conn.close()
            with lock:
                for k, v in mine.items():
                    out[k].extend(v)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policies = save_policies(root / "policies", args.seed)
        servers = {
            "no shadow": Served(root / "none.db", policies["live"], root),
            "two shadows": Served(root / "two.db", policies["live"], root),
        }
        try:
            for name in ("cheap", "greedy"):
                status, body = servers["two shadows"].request(
                    "POST", "/v1/shadows", {"name": name, "path": str(policies[name])}
                )
                if status != 201:
                    raise RuntimeError(f"registering shadow {name} failed: {status} {body}")
            lat: dict[tuple[str, int, str], list[float]] = {}
            for r in range(args.rounds):
                for c in levels:
                    for label, srv in servers.items():
                        got = load(srv.url, c, args.requests, args.seed + 1000 * r + c)
                        for path, values in got.items():
                            lat.setdefault((label, c, path), []).extend(values)
            scored = {
                name: servers["two shadows"].request("GET", f"/v1/shadows/{name}/report?min_decisions=2")[1]
                for name in ("cheap", "greedy")
            }
        finally:
            for srv in servers.values():
                srv.stop()
    expected = args.rounds * sum(levels) * args.requests
    rows = []
    for (label, c, path), values in sorted(lat.items()):
        ms = np.asarray(values) * 1e3
        rows.append(
            {"server": label, "concurrency": c, "path": path, "n": len(values),
             "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
        )  # fmt: skip
    added = []
    for c in levels:
        for path in ("route", "feedback"):
            base = next(
                r for r in rows if r["server"] == "no shadow" and r["concurrency"] == c and r["path"] == path
            )
            two = next(
                r
                for r in rows
                if r["server"] == "two shadows" and r["concurrency"] == c and r["path"] == path
            )
            added.append(
                {"concurrency": c, "path": path, "added_p50_ms": two["p50_ms"] - base["p50_ms"],
                 "added_p99_ms": two["p99_ms"] - base["p99_ms"]}
            )  # fmt: skip
    result = {
        # Relative to the repository, so results written on one machine name no path of it.
        "settings": {**vars(args), "out": os.path.relpath(args.out, REPO)},
        "latency": rows,
        "added_by_two_shadows": added,
        "scored": {n: {"n_decisions": s["n_decisions"], "status": s["status"]} for n, s in scored.items()},
        "expected_scored": expected,
        "cpus": os.cpu_count(),
    }
    for n, s in scored.items():
        if s["n_decisions"] != expected or s["status"] != "active":
            raise RuntimeError(
                f"shadow {n} scored {s['n_decisions']} of {expected} decisions ({s['status']})"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(
            f"{r['server']:>12}  c={r['concurrency']:<3} {r['path']:<9} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms"
        )
    for a in added:
        print(
            f"two shadows add  c={a['concurrency']:<3} {a['path']:<9} p50 {a['added_p50_ms']:+7.3f} ms  "
            f"p99 {a['added_p99_ms']:+7.3f} ms"
        )
    print(f"every decision scored by both shadows: {expected} each; wrote {out}")
    return result


if __name__ == "__main__":
    main()
