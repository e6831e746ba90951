"""Environment throughput: Routing-v0, its batched vector env and Cascade-v0 against CartPole-v1, in one run.

Every env is stepped with pre-drawn actions (no policy, no ``action_space.sample()`` in the loop) for about
``--seconds`` per repeat; repeats are interleaved over all envs so that machine load hits them alike, and the
median is reported. Throughput is measured on two clocks: wall time, and the process's CPU time (steadier on a
shared machine, where the process is often descheduled). Ratios divide by CartPole-v1 built with ``gym.make``
(Gymnasium's default wrappers, passive checker included) on the same clock.

Targets: Routing-v0 step+reset ≥ 2×, vector env at N=1024 ≥ 50×, Cascade-v0 ≥ 1× (step alone is reported
without a target: what users feel is PPO's fps, which ``experiments/bench_ppo.py`` measures).
For Routing-v0 it also times floors: the least a legal step (and step+reset) can do (the required ``info`` and
fresh observations), inlined without any env object, i.e. the ratios any implementation could reach on this machine.
It also checks that env instances hold no copy of the dataset arrays (``np.shares_memory``) and measures the
memory one more env instance costs.

    python experiments/bench_envs.py                       # full run (~1-2 min)
    python experiments/bench_envs.py --seconds 0.05 --repeats 1 --num-envs 16 --memory-instances 5 --out /tmp/b.csv   # smoke size
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import routing_env  # noqa: F401  (registers the env ids)
from routing_env.data import LoggedDataset, load_sample
from routing_env.envs import (
    CASCADE_ID,
    ROUTING_ID,
    CascadeEnv,
    CascadeVectorEnv,
    RoutingEnv,
    RoutingVectorEnv,
)

RESULTS = Path(__file__).resolve().parent / "results"
Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.process_time}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="duration of one measurement")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the median is reported")
    p.add_argument("--num-envs", type=int, default=1024, help="sub-envs of the vector env")
    p.add_argument("--memory-instances", type=int, default=50, help="env instances in the memory measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_envs.csv")
    return p.parse_args()


# A measurement runs `chunk` steps per call of `run_chunk` and returns how many env steps it took.
Runner = Callable[[], int]


def single_env_runner(env: gym.Env, actions: list[int], reset_on_done: bool, seed: int) -> Runner:
    env.reset(seed=seed)

    def run() -> int:
        step, reset = env.step, env.reset
        if reset_on_done:
            for a in actions:
                _, _, terminated, truncated, _ = step(a)
                if terminated or truncated:
                    reset()
        else:
            for a in actions:
                step(a)
        return len(actions)

    return run


def step_floor_runner(ds: LoggedDataset, actions: list[int], seed: int, reset: bool) -> Runner:
    """The least a legal Routing-v0 step (and, with ``reset``, the reset after it) can do, inlined: no env
    object, no method call, no checks, no wrappers.

    Per step it does only what the step's contract requires: take the next query of a shuffled pass, look up the
    logged outcome of the chosen model in a per-query tuple, build the eight-key ``info`` (query id, model,
    quality, cost, latency, oracle action and reward, regret) and return a fresh copy of an observation (Gymnasium's
    checker rejects observations that share memory across calls). A reset returns a fresh observation and the
    three-key ``info`` (query id and index, cost weight). Built from the public dataset arrays, so it bounds any
    implementation on this machine, not only this one.
    """
    n = ds.n_queries
    rewards = ds.rewards(0.0)
    oracle = rewards.argmax(axis=1)
    latency = np.full(rewards.shape, np.nan) if ds.latency is None else ds.latency.astype(np.float64)
    per_action = np.stack((rewards, ds.quality, ds.cost, latency), axis=2).reshape(n, -1)
    packed = [
        (qid, int(o), float(rewards[i, o]), *per_action[i].tolist())
        for i, (qid, o) in enumerate(zip(ds.query_ids.tolist(), oracle.tolist()))
    ]
    rows = list(ds.features)
    models = list(ds.models)
    qids = ds.query_ids.tolist()
    order = np.random.default_rng(seed).permutation(n).tolist()
    position = [0]

    def run() -> int:
        pos = position[0]
        for a in actions:
            if pos == n:
                pos = 0
            q = order[pos]
            pos += 1
            row = packed[q]
            i = 3 + 4 * a
            r = row[i]
            info = {
                "query_id": row[0],
                "model": models[a],
                "quality": row[i + 1],
                "cost": row[i + 2],
                "latency": row[i + 3],
                "oracle_action": row[1],
                "oracle_reward": row[2],
                "regret": row[2] - r,
            }
            _ = (rows[q].copy(), r, True, False, info)
            if reset:
                if pos == n:
                    pos = 0
                q = order[pos]
                pos += 1
                _ = (rows[q].copy(), {"query_id": qids[q], "query_index": q, "cost_weight": 0.0})
        position[0] = pos
        return len(actions)

    return run


def cascade_runner(env: gym.Env, free: bool, seed: int, n_models: int) -> Runner:
    """A fixed policy: two calls (escalate once, or call models 1 and K-1), then accept."""
    plan = [1 + 0, 1 + (n_models - 1), 0] if free else [1, 0]
    env.reset(seed=seed)

    def run() -> int:
        step, reset = env.step, env.reset
        steps = 0
        for _ in range(300):
            for a in plan:
                _, _, terminated, truncated, _ = step(a)
                steps += 1
                if terminated or truncated:
                    break
            reset()
        return steps

    return run


def vector_runner(venv: RoutingVectorEnv, seed: int, count: str) -> Runner:
    """Counts env steps (``"env_steps"``: N per call, autoreset steps included) or only the steps where a
    sub-env acted on a query (``"decisions"``)."""
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, venv.single_action_space.n, size=venv.num_envs) for _ in range(8)]

    def run() -> int:
        decisions = 0
        for a in actions:
            _, _, _, _, info = venv.step(a)
            # Same-step autoreset files the step info of ended episodes under final_info.
            for part in (info, info.get("final_info", {})):
                if "_quality" in part:
                    decisions += int(part["_quality"].sum())
        return venv.num_envs * len(actions) if count == "env_steps" else decisions

    return run


def cascade_vector_runner(venv: CascadeVectorEnv, seed: int) -> Runner:
    """A fixed pattern per step: call the first model, call the last, accept (autoreset steps included)."""
    venv.reset(seed=seed)
    k = len(venv.models)
    plan = [np.full(venv.num_envs, 1), np.full(venv.num_envs, k), np.zeros(venv.num_envs, dtype=np.int64)]

    def run() -> int:
        for a in plan:
            venv.step(a)
        return venv.num_envs * len(plan)

    return run


def measure(run: Runner, seconds: float, clock: Clock) -> float:
    run()  # warm up (first pass draws, caches)
    start = clock()
    steps = 0
    while True:
        steps += run()
        elapsed = clock() - start
        if elapsed >= seconds:
            return steps / elapsed


def memory_report(n_instances: int = 50) -> dict[str, float]:
    """Bytes one more ``gym.make(ROUTING_ID)`` instance costs, against the bytes of the dataset's arrays."""
    first = gym.make(ROUTING_ID).unwrapped
    assert isinstance(first, RoutingEnv)
    ds = first.dataset
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    envs = [gym.make(ROUTING_ID).unwrapped for _ in range(n_instances)]
    venvs = [gym.make_vec(ROUTING_ID, num_envs=4).unwrapped for _ in range(5)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    shared = all(
        np.shares_memory(e.dataset.quality, ds.quality) and np.shares_memory(e.dataset.features, ds.features)
        for e in envs
    ) and all(isinstance(v, RoutingVectorEnv) and v._features is ds.features for v in venvs)
    array_bytes = sum(
        a.nbytes for a in (ds.quality, ds.cost, ds.features, ds.latency, ds.signal) if a is not None
    )
    return {
        "instances": n_instances,
        "bytes_per_env": (grown - 0.0) / (n_instances + 5),
        "dataset_array_bytes": float(array_bytes),
        "shares_memory": float(shared),
    }


def main() -> None:
    args = parse_args()
    seed = args.seed
    ds = load_sample()
    k = ds.n_models
    rng = np.random.default_rng(seed)
    routing_actions = rng.integers(0, k, size=2000).tolist()
    cartpole_actions = rng.integers(0, 2, size=2000).tolist()

    cases: dict[str, tuple[Callable[[], Runner], float | None]] = {
        "CartPole-v1 step+reset (gym.make)": (
            lambda: single_env_runner(gym.make("CartPole-v1"), cartpole_actions, True, seed),
            None,
        ),
        "CartPole-v1 step+reset (no env checker)": (
            lambda: single_env_runner(
                gym.make("CartPole-v1", disable_env_checker=True), cartpole_actions, True, seed
            ),
            None,
        ),
        "Routing-v0 step+reset (gym.make)": (
            lambda: single_env_runner(gym.make(ROUTING_ID), routing_actions, True, seed),
            2.0,
        ),
        "Routing-v0 step+reset (no env checker)": (
            lambda: single_env_runner(
                gym.make(ROUTING_ID, disable_env_checker=True), routing_actions, True, seed
            ),
            2.0,
        ),
        "Routing-v0 step+reset (unwrapped)": (
            lambda: single_env_runner(RoutingEnv(), routing_actions, True, seed),
            2.0,
        ),
        "Routing-v0 step+reset floor (inlined, no env)": (
            lambda: step_floor_runner(ds, routing_actions, seed, reset=True),
            None,
        ),
        "Routing-v0 step alone (gym.make)": (
            lambda: single_env_runner(
                gym.make(ROUTING_ID, queries_per_episode=10**12), routing_actions, False, seed
            ),
            None,
        ),
        "Routing-v0 step alone (no env checker)": (
            lambda: single_env_runner(
                gym.make(ROUTING_ID, queries_per_episode=10**12, disable_env_checker=True),
                routing_actions,
                False,
                seed,
            ),
            None,
        ),
        "Routing-v0 step alone (unwrapped)": (
            lambda: single_env_runner(RoutingEnv(queries_per_episode=10**12), routing_actions, False, seed),
            None,
        ),
        "Routing-v0 step floor (inlined, no env)": (
            lambda: step_floor_runner(ds, routing_actions, seed, reset=False),
            None,
        ),
        "Routing-v0 λ-conditioned step+reset (gym.make)": (
            lambda: single_env_runner(
                gym.make(ROUTING_ID, cost_weight_range=(0.0, 2.0), observe_cost_weight=True),
                routing_actions,
                True,
                seed,
            ),
            None,
        ),
        f"Routing vector N={args.num_envs} next-step, env steps": (
            lambda: vector_runner(
                gym.make_vec(ROUTING_ID, num_envs=args.num_envs).unwrapped, seed, "env_steps"
            ),
            50.0,
        ),
        f"Routing vector N={args.num_envs} next-step, decisions": (
            lambda: vector_runner(
                gym.make_vec(ROUTING_ID, num_envs=args.num_envs).unwrapped, seed, "decisions"
            ),
            None,
        ),
        f"Routing vector N={args.num_envs} same-step, decisions": (
            lambda: vector_runner(
                RoutingVectorEnv(num_envs=args.num_envs, autoreset_mode="same_step"), seed, "decisions"
            ),
            None,
        ),
        f"Cascade vector N={args.num_envs} free, env steps": (
            lambda: cascade_vector_runner(
                gym.make_vec(CASCADE_ID, num_envs=args.num_envs, mode="free").unwrapped, seed
            ),
            None,
        ),
        "Cascade-v0 chain (gym.make)": (
            lambda: cascade_runner(gym.make(CASCADE_ID), False, seed, k),
            1.0,
        ),
        "Cascade-v0 free (gym.make)": (
            lambda: cascade_runner(gym.make(CASCADE_ID, mode="free"), True, seed, k),
            1.0,
        ),
        "Cascade-v0 free (unwrapped)": (
            lambda: cascade_runner(CascadeEnv(mode="free"), True, seed, k),
            1.0,
        ),
    }
    runners = {name: build() for name, (build, _) in cases.items()}
    samples: dict[tuple[str, str], list[float]] = {(n, c): [] for n in cases for c in CLOCKS}
    for rep in range(args.repeats):
        names = list(cases) if rep % 2 == 0 else list(reversed(cases))
        for name in names:
            for clock_name, clock in CLOCKS.items():
                samples[(name, clock_name)].append(measure(runners[name], args.seconds, clock))

    reference = "CartPole-v1 step+reset (gym.make)"
    ref = {c: statistics.median(samples[(reference, c)]) for c in CLOCKS}
    rows = []
    print(
        f"{'environment':<52} {'steps/s wall':>13} {'×CartPole':>9} {'steps/s cpu':>13} {'×CartPole':>9}  target"
    )
    for name, (_, target) in cases.items():
        wall = statistics.median(samples[(name, "wall")])
        cpu = statistics.median(samples[(name, "cpu")])
        row = {
            "environment": name,
            "steps_per_s_wall": round(wall),
            "ratio_wall": round(wall / ref["wall"], 2),
            "steps_per_s_cpu": round(cpu),
            "ratio_cpu": round(cpu / ref["cpu"], 2),
            "target_ratio": "" if target is None else target,
        }
        rows.append(row)
        mark = "" if target is None else f"≥ {target:g}×"
        print(
            f"{name:<52} {row['steps_per_s_wall']:>13,} {row['ratio_wall']:>8}× "
            f"{row['steps_per_s_cpu']:>13,} {row['ratio_cpu']:>8}×  {mark}"
        )
    by_name = {r["environment"]: r for r in rows}
    print()
    for what in ("step+reset", "step"):
        floor = by_name[f"Routing-v0 {what} floor (inlined, no env)"]
        env = by_name[f"Routing-v0 {'step+reset' if what == 'step+reset' else 'step alone'} (unwrapped)"]
        print(
            f"{what} floor (the least a legal {what} can do, inlined): {floor['ratio_wall']}× CartPole (wall), "
            f"{floor['ratio_cpu']}× (cpu); Routing-v0 unwrapped reaches "
            f"{env['steps_per_s_cpu'] / floor['steps_per_s_cpu']:.2f} of it (cpu)"
        )
    mem = memory_report(args.memory_instances)
    print(
        f"\nmemory: one more env instance costs {mem['bytes_per_env'] / 1024:.1f} KiB "
        f"(dataset arrays: {mem['dataset_array_bytes'] / 1024**2:.2f} MiB); "
        f"every instance shares the dataset arrays: {bool(mem['shares_memory'])}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow(
            {
                "environment": "memory: bytes per extra env instance",
                "steps_per_s_wall": round(mem["bytes_per_env"]),
                "ratio_wall": "",
                "steps_per_s_cpu": "",
                "ratio_cpu": "",
                "target_ratio": f"dataset arrays {int(mem['dataset_array_bytes'])} bytes, shared",
            }
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
