"""Benchmark of the gateway: the same fake upstream called directly, through ``routing-env gateway`` and through
LiteLLM, in one run.

One fake OpenAI-compatible upstream (``experiments/fake_upstream.py``, every model of the bundled sample) answers
all three:

- ``direct``: the load generator calls the fake itself (a model drawn per request): the reference;
- ``gateway``: ``routing-env gateway`` with LinUCB on text features (featurize the prompt, route, log the decision,
  call the model, log the call's tokens and cost, answer; every step committed before the answer);
- ``litellm``: a LiteLLM proxy (``litellm --config``) with the seven models as deployments of one model group,
  routed by its ``simple-shuffle`` strategy, no database. When the proxy cannot start (``litellm[proxy]`` needs a
  ``litellm-proxy`` package of the same version, and the proxy imports a dozen more), LiteLLM's ``Router`` is
  timed in this process instead (``--litellm router``), which has no HTTP hop of its own: a flattering reference.

The servers are pinned to one CPU, the load generator (an asyncio client with raw keep-alive HTTP/1.1 connections)
to another; the targets alternate per round, so drift on a shared machine hits them alike. Reported: requests/s at
each concurrency, p50 and p99 latency, the latency each adds over ``direct`` at p50 and p99, and the gateway's
throughput over LiteLLM's. Every request the gateway answered is checked to be in its store with its cost.

    python experiments/bench_gateway.py                      # full run (a few minutes)
    python experiments/bench_gateway.py --requests 200       # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _processes import add_load_arguments, wait_until_ready
from bench_server import free_port, run_level
from fake_upstream import text_policy

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("direct", "gateway", "litellm")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(p, requests=2000, concurrency="1,16", per="target and concurrency level")
    p.add_argument("--warmup", type=int, default=100, help="untimed requests before each measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the targets")
    p.add_argument(
        "--litellm", default="auto", choices=["auto", "proxy", "router", "off"], help="how LiteLLM is run"
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU this load generator is pinned to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "bench_gateway.csv"))
    return p.parse_args()


# ---------------------------------------------------------------------------------------------------- servers
def start(cmd: list[str], port: int, ready: str, cpu: int | None, env: dict[str, str] | None = None) -> Any:
    """``cmd`` as a process (pinned to ``cpu``), once ``GET ready`` answers on ``port``."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        preexec_fn=pin,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_until_ready(proc, port, str(cmd[:3]), path=ready, timeout_s=180.0)


def deployments(models: tuple[str, ...], fake_url: str) -> list[dict[str, Any]]:
    """LiteLLM's ``model_list``: each model a deployment of the ``router`` group, on the fake."""
    return [
        {
            "model_name": "router",
            "litellm_params": {"model": f"openai/{m}", "api_base": fake_url + "/v1", "api_key": "unused"},
        }
        for m in models
    ]


def proxy_available() -> str | None:
    """Why the LiteLLM proxy cannot run here, or ``None`` when it can."""
    if importlib.util.find_spec("litellm") is None:
        return "litellm is not installed"
    check = [sys.executable, "-c", "import litellm.proxy.proxy_server"]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run(check, capture_output=True, text=True, env=env, timeout=300)
    if run.returncode != 0:
        last = [ln for ln in run.stderr.strip().splitlines() if ln.strip()][-1:]
        return f"the proxy does not import: {last[0] if last else 'unknown error'}"
    return None


# ---------------------------------------------------------------------------------------------------- LiteLLM Router in process
async def router_level(
    router: Any, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[float, np.ndarray]:
    """LiteLLM's ``Router.acompletion`` over ``bodies`` with ``concurrency`` tasks; (elapsed s, latencies s)."""
    latencies = np.zeros(len(bodies))
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            await router.acompletion(**bodies[i])
            latencies[i] = time.perf_counter() - t0

    start_t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start_t, latencies


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ncpu = os.cpu_count() or 1
    pinned = args.server_cpu != args.client_cpu and max(args.server_cpu, args.client_cpu) < ncpu
    server_cpu = args.server_cpu if pinned else None
    if pinned:
        os.sched_setaffinity(0, {args.client_cpu})
    else:
        print(f"note: cannot pin servers and client to separate CPUs on {ncpu} CPU(s); running unpinned")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    from agents.online import SQLiteDecisionStore
    from routing_env.data import load_sample

    sample = load_sample()
    assert sample.prompts is not None
    rng = np.random.default_rng(args.seed)
    mode = args.litellm
    why_not = None
    if mode in ("auto", "proxy"):
        why_not = proxy_available()
        if why_not is not None and mode == "proxy":
            raise SystemExit(f"--litellm proxy: {why_not}")
        mode = "proxy" if why_not is None else "router"
    if why_not is not None:
        print(f"LiteLLM proxy unavailable ({why_not}); timing LiteLLM's Router in this process instead")
    targets = [t for t in TARGETS if t != "litellm" or mode != "off"]

    n = args.requests + args.warmup
    rows = rng.integers(3000, sample.n_queries, size=n)  # queries the policy was not fitted on
    models = rng.integers(sample.n_models, size=n)

    def body(i: int, model: str) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": str(sample.prompts[rows[i]])}]}  # type: ignore[index]

    bodies = {
        "direct": [json.dumps(body(i, sample.models[models[i]])).encode() for i in range(n)],
        "gateway": [json.dumps(body(i, "router")).encode() for i in range(n)],
        "litellm": [json.dumps(body(i, "router")).encode() for i in range(n)],
    }
    timing: dict[tuple[str, int], list[tuple[float, np.ndarray]]] = {}
    procs: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        policy = text_policy(sample, tmp / "policy", epsilon=0.05)
        try:
            fake_port = free_port()
            fake = [sys.executable, str(REPO / "experiments" / "fake_upstream.py"), "--port", str(fake_port)]
            procs.append(start(fake, fake_port, "/fake/stats", server_cpu))
            fake_url = f"http://127.0.0.1:{fake_port}"
            ports = {"direct": fake_port, "gateway": free_port()}
            config = {
                "models": [
                    {
                        "name": m,
                        "base_url": fake_url + "/v1",
                        "input_price": sample.model_cards[m].input_price,
                        "output_price": sample.model_cards[m].output_price,
                    }
                    for m in sample.models
                ],
                "policy": str(policy),
                "store": str(tmp / "gateway.db"),
                "checkpoint_every": 1000,
            }
            (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
            gateway = [sys.executable, "-m", "agents.cli", "gateway", "--config", str(tmp / "gateway.yaml")]
            procs.append(
                start([*gateway, "--port", str(ports["gateway"])], ports["gateway"], "/healthz", server_cpu)
            )
            router = None
            if mode == "proxy":
                ports["litellm"] = free_port()
                lite = {
                    "model_list": deployments(sample.models, fake_url),
                    "router_settings": {"routing_strategy": "simple-shuffle"},
                    "litellm_settings": {"drop_params": True},
                }
                (tmp / "litellm.yaml").write_text(yaml.safe_dump(lite))
                litellm_bin = str(Path(sys.executable).with_name("litellm"))
                cmd = [litellm_bin, "--config", str(tmp / "litellm.yaml"), "--port", str(ports["litellm"])]
                env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "LITELLM_LOG": "ERROR"}
                procs.append(start(cmd, ports["litellm"], "/health/liveliness", server_cpu, env))
            elif mode == "router":
                import litellm

                router = litellm.Router(
                    model_list=deployments(sample.models, fake_url), routing_strategy="simple-shuffle"
                )
            served = 0
            for _ in range(args.rounds):
                for c in levels:
                    for target in targets:
                        if target == "litellm" and router is not None:
                            plain = [json.loads(b) for b in bodies[target]]
                            asyncio.run(router_level(router, plain[: args.warmup], c))
                            elapsed, lat = asyncio.run(router_level(router, plain[args.warmup :], c))
                        else:
                            warm, timed = bodies[target][: args.warmup], bodies[target][args.warmup :]
                            elapsed, lat, _ = asyncio.run(
                                run_level(ports[target], "/v1/chat/completions", timed, c, warm)
                            )
                            served += n if target == "gateway" else 0
                        timing.setdefault((target, c), []).append((elapsed, lat))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=60)
        with SQLiteDecisionStore(tmp / "gateway.db", wal_checkpoint_s=None) as store:
            logged = store.max_decision_seq()
            priced = sum(
                1 for d in store.decisions() if any(c.cost is not None for c in store.calls(d.decision_id))
            )
        if logged != served or priced != served:
            raise RuntimeError(
                f"the gateway answered {served} requests; its store holds {logged}, {priced} priced"
            )

    results = summarise(timing, levels, targets)
    report(results, levels, targets, mode, pinned, args, served)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "target",
        "concurrency",
        "requests",
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "added_p50_ms",
        "added_p99_ms",
    ]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(results)
    print(f"wrote {out}")


def summarise(
    timing: dict[tuple[str, int], list[tuple[float, np.ndarray]]], levels: list[int], targets: list[str]
) -> list[dict[str, Any]]:
    """One row per (target, concurrency): requests/s over its runs, p50/p99, and what it adds over direct."""
    out = []
    for c in levels:
        base = np.concatenate([lat for _, lat in timing["direct", c]])
        for target in targets:
            runs = timing[target, c]
            lat = np.concatenate([lat for _, lat in runs])
            p50, p99 = (float(np.percentile(lat, q)) * 1e3 for q in (50, 99))
            out.append(
                {
                    "target": target,
                    "concurrency": c,
                    "requests": len(lat),
                    "req_per_s": round(len(lat) / sum(e for e, _ in runs), 1),
                    "p50_ms": round(p50, 3),
                    "p99_ms": round(p99, 3),
                    "added_p50_ms": round(p50 - float(np.percentile(base, 50)) * 1e3, 3),
                    "added_p99_ms": round(p99 - float(np.percentile(base, 99)) * 1e3, 3),
                }
            )
    return out


def report(
    rows: list[dict[str, Any]],
    levels: list[int],
    targets: list[str],
    mode: str,
    pinned: bool,
    args: argparse.Namespace,
    served: int,
) -> None:
    print(
        f"\nservers on CPU {args.server_cpu}, load generator on CPU {args.client_cpu} (pinned: {pinned}); "
        f"LiteLLM as {mode}; {args.rounds} rounds × {args.requests} timed requests per cell"
    )
    print(f"{'target':<9}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}")
    for r in rows:
        print(
            f"{r['target']:<9}{r['concurrency']:>5}{r['req_per_s']:>10}{r['p50_ms']:>9}{r['p99_ms']:>9}"
            f"{r['added_p50_ms']:>9}{r['added_p99_ms']:>9}"
        )
    by = {(r["target"], r["concurrency"]): r for r in rows}
    for c in levels:
        g = by["gateway", c]
        line = f"c={c}: the gateway adds {g['added_p50_ms']} ms at p50 and {g['added_p99_ms']} ms at p99"
        if "litellm" in targets:
            ratio = g["req_per_s"] / by["litellm", c]["req_per_s"]
            line += f"; its requests/s are {ratio:.2f}× LiteLLM's ({g['req_per_s']} vs {by['litellm', c]['req_per_s']})"
            line += f" [target ≥ 2×: {ratio >= 2}]"
        if c == 1:
            line += f" [target added p50 ≤ 1 ms: {g['added_p50_ms'] <= 1.0}]"
        print(line)
    print(f"the gateway's store holds all {served} requests it answered, each with its priced call")


if __name__ == "__main__":
    main()
