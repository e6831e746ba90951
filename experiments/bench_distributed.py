"""Scale-out benchmarks on Ray (issue #17), one section per ``--part`` (``all`` runs every section in order), each
writing its own CSV to ``--out-dir`` (``experiments/results/``) as ``bench_distributed_<part>.csv``.

``--part rllib``: PPO on the bundled sample's training split, at one λ and one number of env steps, by SB3
(``agents.ppo.train_ppo``: the native vector env in this process) and by RLlib (``agents.training.train_rllib``)
with each number of env runners in ``--env-runners`` (each stepping the native vector env of ``--n-envs``
copies; 0 samples in this process). For each it reports env steps per second of training, the set-up time (Ray,
env runners, learner), and the reward of the kept policy on the held-out test split, relative to SB3's on the same
split (one split and one run of each trainer per ``--seeds`` entry).

    python experiments/bench_distributed.py --part rllib
    python experiments/bench_distributed.py --part rllib --env-runners 0 --seeds 0 1 2 3 4   # quality over seeds
    python experiments/bench_distributed.py --part rllib --timesteps 4096 --env-runners 1   # smoke size

On a 2-core machine more env runners are not expected to be faster: they share the cores with the learner. A local
Ray of ``--num-cpus`` CPUs is started for this part unless this process already joined one.

``--part ope``: off-policy evaluation over sharded parquet bandit logs, Ray Data against the single process.

For each size in ``--rows`` (default 10⁶ and 10⁷) the logs are generated into a temporary folder as parquet shards
of ``--rows-per-file`` rows, in the shape of a decision store's export (one logged row per decision:
``query_id``, ``model``, ``quality``, ``cost``, ``logged``, ``propensity``, ``x_0 … x_{d-1}``). Contexts are
Gaussian; a model's correctness is Bernoulli with a logistic dependence on them; the logger is a softmax over the
models mixed with 20% uniform. The target is a ``LogisticRouter`` fitted on 20,000 full-information queries from
the same generator, saved in the policy directory format and loaded by each path.

Each path runs in a fresh child process while this process samples, every 0.1 s, the proportional set size (PSS,
``/proc/<pid>/smaps_rollup``: a page shared by several processes is split between them, so Ray's object store
and its workers count once) summed over the child and all its descendants (the Ray driver, GCS, raylet and
workers):

- ``ray``: ``ray.init(num_cpus=--num-cpus)``, a warm-up, then ``estimate_policy_value_distributed`` (a pass for the
  cost scale, one for the reward model's sample, one for the estimates);
- ``single``: pyarrow reads the logged rows of every shard into one table, ``BanditFeedback`` is built from its
  arrays, then ``distributed_estimated_rewards`` (the same reward model: same sample, folds and fit) and
  ``estimate_policy_value``.

Reported per (path, rows): seconds of the evaluation (after start-up), rows/s, the peak PSS while it runs and the
PSS just before it (start-up: interpreter, imports, Ray's idle processes), and the largest difference between the
two paths' estimates and standard errors. What must hold: Ray's peak stays flat as the rows grow ×10, and the
estimates agree; on 2 cores no speed-up is expected.

Run:  python experiments/bench_distributed.py --part ope [--rows 1000000 10000000] [--num-cpus 2]
Writes experiments/results/bench_distributed_ope.csv (``--out`` names another file for a single part).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ESTIMATORS = ("IPS", "SNIPS", "DR", "SNDR")


def build_parser(parts: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=[*parts, "all"], default="all", help="which section to run")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="log sizes")
    parser.add_argument("--rows-per-file", type=int, default=250_000, help="rows per parquet shard")
    parser.add_argument("--n-models", type=int, default=5)
    parser.add_argument("--n-features", type=int, default=8)
    parser.add_argument("--cost-weight", type=float, default=0.5, help="λ of the reward")
    parser.add_argument("--n-bootstrap", type=int, default=100, help="Poisson-bootstrap replicates")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--batch-size", type=int, default=65_536, help="rows per map_batches call")
    parser.add_argument(
        "--object-store-mib",
        type=int,
        default=512,
        help="Ray Data's object-store budget for blocks in flight (0: Ray's default, a share of the store)",
    )
    parser.add_argument("--paths", nargs="+", choices=["ray", "single"], default=["ray", "single"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated logs and the bootstrap")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="folder for the generated logs (default: a temp dir)"
    )
    parser.add_argument(
        "--logs-dir",
        type=Path,
        default=None,
        help="keep the generated logs here and reuse them on the next run",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="folder of the parts' CSVs")
    parser.add_argument("--out", type=Path, default=None, help="CSV path when a single part runs")
    # --part rllib
    parser.add_argument("--timesteps", type=int, default=100_000, help="env steps per training run")
    parser.add_argument(
        "--env-runners", type=int, nargs="+", default=[0, 1, 2], help="RLlib runners (0: in-process)"
    )
    parser.add_argument(
        "--n-envs", type=int, default=8, help="copies per vector env (SB3's and each runner's)"
    )
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="share of the sample held out for testing"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one split and run per seed")
    parser.add_argument("--_child", choices=["ray", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--_logs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_policy", type=Path, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------- generated logs
class Generator:
    """Contexts, per-model correctness and USD costs, and a softmax logger with a 20% exploration floor."""

    def __init__(self, n_models: int, n_features: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self.models = tuple(f"model-{j}" for j in range(n_models))
        self.skill = rng.normal(scale=0.7, size=(n_features, n_models))
        self.bias = np.linspace(-0.5, 1.0, n_models)
        self.logger = rng.normal(scale=0.8, size=(n_features, n_models))
        self.price = np.geomspace(1e-4, 1e-2, n_models)  # USD per call

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``features (n, d) float32``, ``quality (n, K)`` 0/1 and ``cost (n, K)`` USD."""
        x = rng.normal(size=(n, self.skill.shape[0])).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-(x @ self.skill + self.bias)))
        quality = (rng.random(p.shape) < p).astype(np.float64)
        cost = self.price * rng.lognormal(0.0, 0.3, size=p.shape)
        return x, quality, cost

    def logging_dist(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.logger
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return 0.8 * e / e.sum(axis=1, keepdims=True) + 0.2 / len(self.models)


def write_logs(gen: Generator, folder: Path, n_rows: int, rows_per_file: int, seed: int) -> int:
    """Write ``n_rows`` logged decisions as parquet shards; returns the number of files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from routing_env.ope.feedback import sample_actions

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    names = np.asarray(gen.models, dtype=object)
    n_files = 0
    for start in range(0, n_rows, rows_per_file):
        m = min(rows_per_file, n_rows - start)
        x, quality, cost = gen.draw(rng, m)
        dist = gen.logging_dist(x)
        action = sample_actions(dist, rng)
        rows = np.arange(m)
        columns = {
            "query_id": pa.array([f"q{i:09d}" for i in range(start, start + m)]),
            "model": pa.array(names[action]),
            "quality": quality[rows, action],
            "cost": cost[rows, action],
            "logged": np.ones(m, dtype=bool),
            "propensity": dist[rows, action],
        }
        columns.update({f"x_{j}": x[:, j] for j in range(x.shape[1])})
        pq.write_table(pa.table(columns), folder / f"part-{n_files:04d}.parquet")
        n_files += 1
    return n_files


def fit_target(gen: Generator, cost_weight: float, seed: int, folder: Path) -> Path:
    """A ``LogisticRouter`` fitted on 20,000 full-information queries, saved as a policy directory."""
    from agents.routers import LogisticRouter
    from routing_env.data import LoggedDataset

    x, quality, cost = gen.draw(np.random.default_rng([seed, 3]), 20_000)
    train = LoggedDataset(
        models=gen.models,
        query_ids=np.array([f"t{i}" for i in range(x.shape[0])], dtype=object),
        quality=quality,
        cost=cost,
        features=x,
    )
    policy = LogisticRouter().fit(train, cost_weight=cost_weight)
    return Path(policy.save(folder / "target"))


# ---------------------------------------------------------------------- the two paths, each in a child process
def _warm_up(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import routing_env.ope.distributed  # noqa: F401 - imported for its start-up cost only

    return batch


def child(args: argparse.Namespace) -> None:
    """Evaluate the target on the logs by one path; print one JSON line with the timings and the table."""
    from routing_env.policy import load_policy

    policy = load_policy(args._policy)
    if args._child == "ray":
        import ray

        from routing_env.ope.distributed import estimate_policy_value_distributed

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        if args.object_store_mib:
            # The streaming executor reads ahead until its object-store budget is used: a fixed budget makes the
            # memory a setting rather than a function of the log's size.
            limits = context.execution_options.resource_limits
            context.execution_options.resource_limits = limits.copy(
                object_store_memory=args.object_store_mib << 20
            )
        # Warm-up: the workers start and import the library before the clock starts.
        ray.data.range(8, override_num_blocks=args.num_cpus).map_batches(_warm_up).take_all()
        start = time.time()
        table = estimate_policy_value_distributed(
            policy,
            args._logs,
            list(ESTIMATORS),
            n_bootstrap=args.n_bootstrap,
            cost_weight=args.cost_weight,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    else:
        from routing_env.ope import estimate_policy_value
        from routing_env.ope.distributed import distributed_estimated_rewards

        start = time.time()
        feedback = read_feedback(args._logs, policy.models, args.cost_weight)
        q = distributed_estimated_rewards(feedback, seed=args.seed)
        table = estimate_policy_value(
            policy,
            feedback,
            list(ESTIMATORS),
            n_bootstrap=args.n_bootstrap,
            estimated_rewards=q,
            seed=args.seed,
        )
    end = time.time()
    result = {
        "start": start,
        "end": end,
        "pss_at_end": tree_pss_mib(os.getpid()),
        "n_rounds": int(table["n_rounds"].iloc[0]),
        "estimate": dict(zip(table["estimator"], table["estimate"].astype(float))),
        "std_error": dict(zip(table["estimator"], table["std_error"].astype(float))),
    }
    print("RESULT " + json.dumps(result), flush=True)


def read_feedback(folder: Path, models: tuple[str, ...], cost_weight: float) -> Any:
    """Every shard's logged rows in one process, as ``BanditFeedback`` built from the arrays (the lean way: the
    long-to-wide ``LoggedDataset`` would hold (n, K) matrices of which one cell per row is observed)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from routing_env.ope import BanditFeedback

    table = pads.dataset(str(folder), format="parquet").to_table(filter=pc.field("logged"))
    action = pd.Categorical(table["model"].to_numpy(zero_copy_only=False), categories=list(models)).codes
    cost = table["cost"].to_numpy()
    k = len(models)
    # "max_mean": the mean cost of the most expensive model (every row of these logs is a logged call).
    mean_cost = np.bincount(action, weights=cost, minlength=k) / np.maximum(
        np.bincount(action, minlength=k), 1
    )
    names = sorted(c for c in table.column_names if c.startswith("x_"))
    features = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j in range(len(names)):
        features[:, j] = table[f"x_{j}"].to_numpy()
    return BanditFeedback(
        models=models,
        features=features,
        action=action.astype(np.int64),
        propensity=table["propensity"].to_numpy(),
        quality=table["quality"].to_numpy(),
        cost=cost,
        cost_scale=float(mean_cost.max()),
        cost_weight=cost_weight,
        query_ids=table["query_id"].to_numpy(zero_copy_only=False),
    )


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:  # the process ended between listing and reading
        pass
    return 0


def tree_pss_mib(root: int) -> tuple[float, int, float]:
    """``(total, processes, largest)``: PSS summed over ``root`` and every process descending from it (MiB), how
    many processes that is, and the largest single one (MiB)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # The command name may hold spaces: the parent pid is the second field after its ')'.
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    sizes, todo = [], [root]
    while todo:
        pid = todo.pop()
        sizes.append(_pss_kib(pid) / 1024.0)
        todo.extend(children.get(pid, []))
    return sum(sizes), len(sizes), max(sizes)


def samples_during(
    samples: Sequence[tuple[float, tuple[float, int, float]]],
    start: float,
    end: float,
    at_end: tuple[float, int, float],
) -> list[tuple[float, int, float]]:
    """The memory samples ``(total, processes, largest)`` of the child's tree while it evaluated: the parent's,
    timed ``(time, sample)``, from ``start`` to ``end`` (the child's clock readings), and the child's own reading
    ``at_end``, so that a run shorter than the sampling interval is measured too."""
    return [m for t, m in samples if start <= t <= end] + [at_end]


def measure(
    args: argparse.Namespace, path: str, logs: Path, policy: Path, log_dir: Path
) -> dict[str, object]:
    """Run one path in a child process, sampling its process tree's PSS; the child's result and the memory."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", path, "--_logs", str(logs)]
    cmd += [
        "--_policy",
        str(policy),
        "--num-cpus",
        str(args.num_cpus),
        "--cost-weight",
        str(args.cost_weight),
    ]
    cmd += [
        "--n-bootstrap",
        str(args.n_bootstrap),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    out_file, err_file = log_dir / f"{path}.out", log_dir / f"{path}.err"
    samples: list[tuple[float, tuple[float, int, float]]] = []
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=HERE.parent)
        while proc.poll() is None:
            samples.append((time.time(), tree_pss_mib(proc.pid)))
            time.sleep(0.1)
    lines = [ln for ln in out_file.read_text().splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = err_file.read_text()[-3000:]
        raise SystemExit(f"the {path} child failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len("RESULT ") :])
    during = samples_during(samples, result["start"], result["end"], tuple(result.pop("pss_at_end")))
    before = [m[0] for t, m in samples if t < result["start"]]
    seconds = result["end"] - result["start"]
    nan = float("nan")
    return {
        **result,
        "seconds": seconds,
        "rows_per_s": result["n_rounds"] / seconds,
        "peak_pss_mib": max((m[0] for m in during), default=nan),
        "startup_pss_mib": before[-1] if before else nan,
        "max_processes": max((m[1] for m in during), default=0),
        "largest_process_mib": max((m[2] for m in during), default=nan),
    }


def ope_part(args: argparse.Namespace) -> pd.DataFrame:
    gen = Generator(args.n_models, args.n_features, args.seed)
    rows_out = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        policy = fit_target(gen, args.cost_weight, args.seed, tmp)
        for n_rows in args.rows:
            name = f"logs-{n_rows}-{args.rows_per_file}-{args.n_models}x{args.n_features}-seed{args.seed}"
            logs = (args.logs_dir or tmp) / name
            kept = sorted(logs.glob("*.parquet")) if args.logs_dir else []
            t0 = time.perf_counter()
            n_files = len(kept) or write_logs(gen, logs, n_rows, args.rows_per_file, args.seed)
            how = "reused" if kept else f"generated in {time.perf_counter() - t0:.1f} s"
            print(f"{n_rows:,} rows in {n_files} parquet files, {how}")
            results = {}
            for path in args.paths:
                results[path] = measure(args, path, logs, policy, tmp)
                r = results[path]
                print(
                    f"  {path:6s}: {r['seconds']:7.1f} s, {r['rows_per_s']:>10,.0f} rows/s, peak PSS "
                    f"{r['peak_pss_mib']:7.0f} MiB (at start-up {r['startup_pss_mib']:.0f} MiB; "
                    f"{r['max_processes']} processes, the largest {r['largest_process_mib']:.0f} MiB)"
                )
            diff_est = diff_se = float("nan")
            if {"ray", "single"} <= set(results):
                diff_est = max(
                    abs(results["ray"]["estimate"][e] - results["single"]["estimate"][e]) for e in ESTIMATORS
                )
                diff_se = max(
                    abs(results["ray"]["std_error"][e] - results["single"]["std_error"][e])
                    for e in ESTIMATORS
                )
                print(f"  largest difference ray − single: estimate {diff_est:.2e}, std_error {diff_se:.2e}")
            for path, r in results.items():
                rows_out.append(
                    {
                        "path": path,
                        "rows": n_rows,
                        "files": n_files,
                        "seconds": r["seconds"],
                        "rows_per_s": r["rows_per_s"],
                        "peak_pss_mib": r["peak_pss_mib"],
                        "startup_pss_mib": r["startup_pss_mib"],
                        "peak_minus_startup_mib": r["peak_pss_mib"] - r["startup_pss_mib"],
                        "max_processes": r["max_processes"],
                        "largest_process_mib": r["largest_process_mib"],
                        "max_abs_diff_estimate": diff_est,
                        "max_abs_diff_std_error": diff_se,
                        **{f"estimate_{e}": r["estimate"][e] for e in ESTIMATORS},
                    }
                )
            if args.logs_dir is None:
                for f in logs.glob("*.parquet"):
                    f.unlink()
    frame = pd.DataFrame(rows_out)
    for path, group in frame.groupby("path", sort=False):
        if len(group) > 1:
            small, large = group.iloc[0], group.iloc[-1]
            growth = large["peak_minus_startup_mib"] / max(small["peak_minus_startup_mib"], 1e-9)
            print(
                f"{path}: rows ×{large['rows'] / small['rows']:.0f} → peak PSS above start-up ×{growth:.2f} "
                f"({small['peak_minus_startup_mib']:.0f} → {large['peak_minus_startup_mib']:.0f} MiB)"
            )
    return frame


# ---------------------------------------------------------------------- RLlib against SB3
def rllib_part(args: argparse.Namespace) -> pd.DataFrame:
    """SB3 and RLlib PPO on the same training split, λ and env steps, for each seed: throughput and test reward."""
    import ray
    import torch

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
    rows: list[dict[str, Any]] = []
    try:
        for seed in args.seeds:
            rows += _rllib_rows(args, seed)
    finally:
        if started:
            ray.shutdown()
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
    return pd.DataFrame(rows)


def _rllib_rows(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    from agents.training import train_ppo, train_rllib
    from routing_env.data import load_sample
    from routing_env.metrics import evaluate_policy

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
PARTS: dict[str, Callable[[argparse.Namespace], pd.DataFrame]] = {"rllib": rllib_part, "ope": ope_part}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser(list(PARTS)).parse_args(argv)
    if args._child:
        child(args)
        return
    for name in PARTS if args.part == "all" else [args.part]:
        frame = PARTS[name](args)
        out = (
            args.out
            if args.out is not None and args.part != "all"
            else args.out_dir / f"bench_distributed_{name}.csv"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
