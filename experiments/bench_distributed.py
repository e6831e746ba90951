"""Distributed benchmarks on Ray, one section per part, each writing its own CSV to ``experiments/results/``.

``--part rllib``: PPO on the bundled sample's training split, at one λ and one number of env steps, by SB3
(``agents.ppo.train_ppo``: the native vector env in this process) and by RLlib (``agents.training.train_rllib``)
with each number of env runners in ``--env-runners`` (each stepping the native vector env of ``--n-envs``
copies; 0 samples in this process). For each it reports env steps per second of training, the set-up time (Ray,
env runners, learner), and the reward of the kept policy on the held-out test split, relative to SB3's on the same
split (one split and one run of each trainer per ``--seeds`` entry).

    python experiments/bench_distributed.py --part rllib
    python experiments/bench_distributed.py --part rllib --env-runners 0 --seeds 0 1 2 3 4   # quality over seeds
    python experiments/bench_distributed.py --part rllib --timesteps 4096 --env-runners 1   # smoke size

Every section lives in :data:`SECTIONS` (``--part all`` runs them all in order); a local Ray of ``--num-cpus``
CPUs is started unless this process already joined one. On a 2-core machine more env runners are not expected to
be faster: they share the cores with the learner.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agents.ppo import train_ppo
from agents.training import train_rllib
from routing_env.data import load_sample
from routing_env.metrics import evaluate_policy

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=[*SECTIONS, "all"], default="all")
    p.add_argument("--timesteps", type=int, default=100_000, help="env steps per training run")
    p.add_argument("--cost-weight", type=float, default=0.5, help="λ of every run")
    p.add_argument(
        "--env-runners", type=int, nargs="+", default=[0, 1, 2], help="RLlib runners (0: in-process)"
    )
    p.add_argument("--n-envs", type=int, default=8, help="copies per vector env (SB3's and each runner's)")
    p.add_argument("--test-size", type=float, default=0.2, help="share of the sample held out for testing")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one split and run per seed")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (when one is started)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    return p.parse_args(argv)


def rllib_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """SB3 and RLlib PPO on the same training split, λ and env steps, for each seed: throughput and test reward."""
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows += _rllib_rows(args, seed)
    print(
        f"PPO on the bundled sample, λ = {args.cost_weight}, {args.timesteps} env steps, {args.n_envs} envs each"
    )
    print(
        f"{'seed':>4s} {'trainer':8s} {'runners':>7s} {'steps/s':>9s} {'set-up s':>9s} {'test reward':>12s} {'vs SB3':>8s}"
    )
    for row in rows:
        print(
            f"{row['seed']:4d} {row['trainer']:8s} {row['env_runners']:7d} {row['steps_per_s']:9.0f} "
            f"{row['setup_s']:9.1f} {row['test_reward']:12.4f} {row['reward_vs_sb3']:+8.2%}"
        )
    return rows


def _rllib_rows(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    train, test = load_sample().split(test_size=args.test_size, seed=seed)
    sb3 = train_ppo(train, args.cost_weight, total_timesteps=args.timesteps, n_envs=args.n_envs, seed=seed)
    assert sb3.policy is not None
    base = evaluate_policy(test, sb3.policy, args.cost_weight).mean_reward
    rows = [_row(seed, "sb3", 0, sb3.model.num_timesteps, sb3.fps, 0.0, base, base)]
    with tempfile.TemporaryDirectory() as tmp:
        # Env runners read the logs by path, as they would from shared storage on a cluster.
        path = train.save(Path(tmp) / "train.parquet")
        for runners in args.env_runners:
            result = train_rllib(
                path,
                args.cost_weight,
                num_env_runners=runners,
                num_envs_per_env_runner=args.n_envs,
                total_timesteps=args.timesteps,
                seed=seed,
            )
            reward = evaluate_policy(test, result.policy, args.cost_weight).mean_reward
            rows.append(
                _row(seed, "rllib", runners, result.timesteps, result.fps, result.setup_seconds, reward, base)
            )
    return rows


def _row(
    seed: int, trainer: str, runners: int, steps: int, fps: float, setup: float, reward: float, base: float
) -> dict[str, Any]:
    return {
        "seed": seed,
        "trainer": trainer,
        "env_runners": runners,
        "timesteps": steps,
        "steps_per_s": fps,
        "setup_s": setup,
        "test_reward": reward,
        "reward_vs_sb3": reward / base - 1.0,
    }


#: The benchmark's parts, in the order ``--part all`` runs them.
SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {"rllib": rllib_section}


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import ray

    started = not ray.is_initialized()
    if started:
        # The runs exchange only small batches and weights: a small object store leaves the memory to the envs.
        ray.init(
            num_cpus=args.num_cpus,
            object_store_memory=200 * 1024**2,
            include_dashboard=False,
            log_to_driver=False,
        )
    torch.set_num_threads(1)
    try:
        for name, section in SECTIONS.items():
            if args.part in (name, "all"):
                write_rows(section(args), args.out_dir / f"bench_distributed_{name}.csv")
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    main()
