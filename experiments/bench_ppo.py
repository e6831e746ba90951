"""PPO throughput on Routing-v0 (native batched vector env) against PPO on CartPole-v1, same hyperparameters.

Both runs use SB3's PPO with one torch thread, the same ``PPOConfig``, the same number of parallel envs and the
same number of timesteps, measured back to back in this process; the order alternates over ``--repeats``, and
the reported ratio is the median of the per-repeat ratios (each pair ran side by side, so load from other
processes affects both members of a pair alike). CartPole runs in SB3's own ``DummyVecEnv`` — SB3's
reference throughput; Routing-v0 runs through ``agents.training.ppo.train_ppo`` (Gymnasium ``VectorEnv`` → SB3 adapter).

    python experiments/bench_ppo.py                 # prints fps of both and the ratio (target ≥ 0.9)
    python experiments/bench_ppo.py --timesteps 4096 --repeats 1    # smoke size
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents.training.ppo import PPOConfig, train_ppo
from routing_env.data import load_sample

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timesteps", type=int, default=65_536, help="environment steps per run")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="runs of each env (median fps is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_ppo.csv")
    return p.parse_args(argv)


def cartpole_fps(config: PPOConfig, timesteps: int, n_envs: int, seed: int) -> float:
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **config.sb3_kwargs())
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - start
    env.close()
    return model.num_timesteps / seconds


def routing_fps(config: PPOConfig, timesteps: int, n_envs: int, seed: int) -> float:
    result = train_ppo(
        load_sample(),
        0.5,
        total_timesteps=timesteps,
        n_envs=n_envs,
        seed=seed,
        validation=None,
        config=config,
    )
    return result.fps


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    gym.logger.min_level = 40
    config = PPOConfig()
    runs: dict[str, list[float]] = {"CartPole-v1": [], "routing_env/Routing-v0": []}
    for r in range(args.repeats):
        order = ["CartPole-v1", "routing_env/Routing-v0"]
        if r % 2:
            order.reverse()
        for name in order:
            fn = cartpole_fps if name == "CartPole-v1" else routing_fps
            fps = fn(config, args.timesteps, args.n_envs, args.seed + r)
            runs[name].append(fps)
            print(f"run {r}: {name:24s} {fps:8.0f} steps/s")
    cart = statistics.median(runs["CartPole-v1"])
    route = statistics.median(runs["routing_env/Routing-v0"])
    ratios = [r / c for r, c in zip(runs["routing_env/Routing-v0"], runs["CartPole-v1"])]
    ratio = statistics.median(ratios)
    print(
        f"median fps: CartPole-v1 {cart:.0f}, Routing-v0 {route:.0f}; per-repeat ratios "
        f"{' '.join(f'{x:.2f}' for x in ratios)}; median ratio Routing/CartPole = {ratio:.2f} (target ≥ 0.9)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["env", "median_fps", "runs_fps", "timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"]
        )
        for name, values in runs.items():
            w.writerow(
                [
                    name,
                    round(statistics.median(values), 1),
                    " ".join(f"{v:.0f}" for v in values),
                    args.timesteps,
                    args.n_envs,
                    config.n_steps,
                    config.batch_size,
                    config.n_epochs,
                ]
            )
        w.writerow(
            [
                "ratio_routing_over_cartpole",
                round(ratio, 3),
                " ".join(f"{x:.3f}" for x in ratios),
                "",
                "",
                "",
                "",
                "",
            ]
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
