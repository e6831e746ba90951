"""PPO throughput on Routing-v0 against PPO on CartPole-v1, same hyperparameters.

Every run uses SB3's PPO with one torch thread, the same ``PPOConfig``, the same number of parallel envs and the
same number of timesteps, measured back to back in this process; the order alternates over ``--repeats``, and
the reported ratios are medians of the per-repeat ratios (the runs of a repeat ran side by side, so load from
other processes affects them alike). CartPole runs in SB3's own ``DummyVecEnv`` — SB3's reference throughput.
Routing-v0 runs twice: through ``agents.training.ppo.train_ppo`` (the native batched ``VectorEnv`` → SB3
adapter), and as a user would wire it by hand, ``gym.make`` copies in SB3's ``DummyVecEnv``.

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
from stable_baselines3.common.vec_env import DummyVecEnv

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


CARTPOLE = "CartPole-v1"
ROUTING = "routing_env/Routing-v0"
ROUTING_DUMMY = "routing_env/Routing-v0 (gym.make + DummyVecEnv)"


def cartpole_fps(config: PPOConfig, timesteps: int, n_envs: int, seed: int) -> float:
    return _sb3_fps(make_vec_env(CARTPOLE, n_envs=n_envs, seed=seed), config, timesteps, seed)


def routing_dummy_fps(config: PPOConfig, timesteps: int, n_envs: int, seed: int) -> float:
    data = load_sample()
    env = DummyVecEnv([lambda: gym.make(ROUTING, dataset=data, cost_weight=0.5) for _ in range(n_envs)])
    env.seed(seed)
    return _sb3_fps(env, config, timesteps, seed)


def _sb3_fps(env: DummyVecEnv, config: PPOConfig, timesteps: int, seed: int) -> float:
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
        warm_start=None,  # PPO's own throughput: the supervised warm start runs outside model.learn anyway
    )
    return result.fps


RUNNERS = {CARTPOLE: cartpole_fps, ROUTING: routing_fps, ROUTING_DUMMY: routing_dummy_fps}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    gym.logger.min_level = 40
    config = PPOConfig()
    runs: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for r in range(args.repeats):
        order = list(RUNNERS) if r % 2 == 0 else list(reversed(RUNNERS))
        for name in order:
            fps = RUNNERS[name](config, args.timesteps, args.n_envs, args.seed + r)
            runs[name].append(fps)
            print(f"run {r}: {name:48s} {fps:8.0f} steps/s")
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {name: [v / c for v, c in zip(runs[name], runs[CARTPOLE])] for name in (ROUTING, ROUTING_DUMMY)}
    print("median fps: " + ", ".join(f"{name} {fps:.0f}" for name, fps in medians.items()))
    for name, values in ratios.items():
        print(
            f"{name}: per-repeat ratios {' '.join(f'{x:.2f}' for x in values)}; "
            f"median ratio Routing/CartPole = {statistics.median(values):.2f}"
            + (" (target ≥ 0.9)" if name == ROUTING else "")
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["env", "median_fps", "runs_fps", "timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"]
        )
        sizes = [args.timesteps, args.n_envs, config.n_steps, config.batch_size, config.n_epochs]
        for name, values in runs.items():
            w.writerow([name, round(medians[name], 1), " ".join(f"{v:.0f}" for v in values), *sizes])
        for name, values in ratios.items():
            label = "ratio_routing_over_cartpole" + ("" if name == ROUTING else "_dummy_vec_env")
            w.writerow(
                [label, round(statistics.median(values), 3), " ".join(f"{x:.3f}" for x in values)] + [""] * 5
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
