"""Does the promotion gate promote what is better and refuse what is worse? Replays with known truth.

Each full-information dataset (the bundled sample; LLMRouter when ``../shared/datasets`` has it, with task one-hot
features) is split in half. The first half trains the routers and a reward model; the second half is the query
population, on which every policy's true value ``mean_x Σ_a π(a|x)·reward(x, a)`` is exact (reward
``quality − λ·cost/cost_scale``, λ = ``--cost-weight``).

- **live**: the best single model on the training half, with ε-greedy exploration (``--epsilon``, uniform);
- **better**: ``LogisticRouter`` fitted on the training half at λ, deployed with the same exploration;
- **worse**: the same router fitted at λ = 0 (cost-blind: it buys the expensive models), with the same exploration;
- **at-margin**: the mixture of *better* and *worse* whose true difference from live is exactly the margin δ —
  the hardest case for the error rate: the gate should promote it in at most ``1 − confidence`` of the runs.

Gate: in each of ``--n-runs`` seeded runs, ``--traffic`` queries are drawn from the population, the live policy
routes them (logging its propensities), and :func:`agents.online.rollout.evaluate_gate` decides on each candidate
(DR with the reward model from the training half, normal one-sided bounds at ``--confidence``, margin δ, live =
the logger, as :func:`~agents.online.rollout.gate_from_store` does). The traffic per dataset is documented below
and in the results: it is where the better candidate reaches about 90% power.

Canary: in each run the candidate serves ``--split`` of the traffic (propensity = split × the serving policy's
probability, evaluated with the mixture propensity), batches of ``--batch`` decisions arrive and
:class:`agents.online.rollout.Canary` re-tests after each with the one-sided normal-mixture confidence sequence,
until it promotes, rolls back, or ``--canary-max`` decisions pass.

Power table: for candidates that move the live policy toward the oracle (deployed with the same exploration), the
decisions needed for 80% power at each effect size ``--effect-sizes``: the normal-approximation formula
``n = ((z_conf + z_0.8)·σ_d/(Δ − δ))²`` with the exact per-decision standard deviation ``σ_d`` of the DR
difference under the live logger (computed on the population), checked by simulating the gate at that traffic;
and the same for the canary's sequence (the n at which its lower bound clears δ with 80% probability, solved on
the boundary).

    python experiments/rollout_gate.py                           # 200 runs per dataset, a minute or two
    python experiments/rollout_gate.py --n-runs 20 --datasets sample --effect-sizes 0.05   # smoke
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from agents.online.rollout import (
    Canary,
    CanaryConfig,
    CanaryDecision,
    GateConfig,
    canary_draw,
    evaluate_gate,
    mixture_feedback,
)
from agents.routers import BestSingleModel, LogisticRouter
from routing_env.data import LoggedDataset, TaskOneHot, load_dataset
from routing_env.errors import DataWarning
from routing_env.ope import BanditFeedback
from routing_env.ope.feedback import sample_actions
from routing_env.ope.paired import SequenceConfig, z_quantile

#: Decisions per gate run, per dataset: about 90% power for the better candidate (see the power table).
DEFAULT_TRAFFIC = {"sample": 20_000, "llmrouter": 20_000}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sample,llmrouter", help="comma-separated dataset names")
    p.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    )
    p.add_argument("--n-runs", type=int, default=200, help="seeded runs per dataset")
    p.add_argument("--traffic", type=int, default=None, help="decisions per gate run (default: per dataset)")
    p.add_argument("--cost-weight", type=float, default=0.5, help="λ of the reward")
    p.add_argument("--epsilon", type=float, default=0.2, help="uniform exploration of the deployed policies")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--margin", type=float, default=0.0, help="δ, reward units")
    p.add_argument("--split", type=float, default=0.2, help="the canary's share of traffic")
    p.add_argument("--batch", type=int, default=250, help="decisions per canary batch")
    p.add_argument("--canary-max", type=int, default=30_000, help="decisions before a canary expires")
    p.add_argument(
        "--canary-plan", type=int, default=5_000, help="traffic the canary's sequence is tuned for"
    )
    p.add_argument("--effect-sizes", default="0.01,0.02,0.03,0.05,0.1", help="for the power table")
    p.add_argument("--power-runs", type=int, default=None, help="runs per power check (default --n-runs)")
    p.add_argument("--max-power-traffic", type=int, default=40_000, help="skip simulating larger n")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    return p.parse_args(argv)


class World(NamedTuple):
    """One dataset as a population with exactly known outcomes, and the policies on it."""

    name: str
    pop: LoggedDataset
    rewards: np.ndarray  # (N, K) true reward of every model on every query
    qhat: np.ndarray  # (N, K) reward model fitted on the training half
    live: np.ndarray  # (N, K) the live policy (the logger)
    candidates: dict[str, np.ndarray]  # (N, K) each
    oracle: np.ndarray  # (N, K) the per-query best model, with the same exploration
    cost_scale: float

    def value(self, dist: np.ndarray) -> float:
        return float((dist * self.rewards).sum(axis=1).mean())

    def truth(self, dist: np.ndarray) -> float:
        return self.value(dist) - self.value(self.live)


def with_task_features(ds: LoggedDataset) -> LoggedDataset:
    if ds.n_features > 0:
        return ds
    enc = TaskOneHot().fit(list(ds.tasks if ds.tasks is not None else []))
    return ds.with_features(
        enc.transform(list(ds.tasks if ds.tasks is not None else [])), names=enc.feature_names
    )


def build_world(name: str, args: argparse.Namespace) -> World:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        kwargs = {"split": "all"} if name == "llmrouter" else {}
        ds = with_task_features(load_dataset(name, root=args.root, **kwargs))
    train, pop = ds.split(0.5, seed=args.seed)
    lam, eps, k = args.cost_weight, args.epsilon, ds.n_models
    scale = ds.resolve_cost_scale()

    def deploy(dist: np.ndarray) -> np.ndarray:
        return (1 - eps) * dist + eps / k

    x_train, x_pop = train.features.astype(np.float64), pop.features.astype(np.float64)
    r_train = train.quality - (lam / scale) * train.cost
    qhat = np.column_stack([Ridge(alpha=1.0).fit(x_train, r_train[:, j]).predict(x_pop) for j in range(k)])
    rewards = pop.quality - (lam / scale) * pop.cost
    live = deploy(BestSingleModel().fit(train, cost_weight=lam).action_probabilities(pop.features))
    better = deploy(LogisticRouter().fit(train, cost_weight=lam).action_probabilities(pop.features))
    worse = deploy(LogisticRouter().fit(train, cost_weight=0.0).action_probabilities(pop.features))
    oracle = deploy(np.eye(k)[rewards.argmax(axis=1)])
    world = World(name, pop, rewards, qhat, live, {"better": better, "worse": worse}, oracle, scale)
    tb, tw = world.truth(better), world.truth(worse)
    if not tw < args.margin < tb:
        raise SystemExit(
            f"{name}: the candidates do not bracket the margin (better {tb:+.4f}, worse {tw:+.4f})"
        )
    # The mixture whose true difference is exactly the margin: V is linear in the mixing weight.
    eta = (args.margin - tw) / (tb - tw)
    world.candidates["at-margin"] = eta * better + (1 - eta) * worse
    return world


def draw_log(
    world: World, n: int, rng: np.random.Generator, logger: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(query indices (n,), actions (n,))`` of ``n`` decisions by ``logger`` on queries drawn from the population."""
    idx = rng.integers(0, world.pop.n_queries, n)
    return idx, sample_actions(logger[idx], rng)


def feedback_of(
    world: World, idx: np.ndarray, action: np.ndarray, propensity: np.ndarray, lam: float
) -> BanditFeedback:
    pop = world.pop
    return BanditFeedback(
        models=pop.models,
        features=pop.features[idx],
        action=action,
        propensity=propensity,
        quality=pop.quality[idx, action],
        cost=pop.cost[idx, action],
        cost_scale=world.cost_scale,
        cost_weight=lam,
    )


def gate_runs(
    world: World, candidates: dict[str, np.ndarray], n: int, runs: int, args: argparse.Namespace, tag: int
) -> pd.DataFrame:
    """The gate on ``runs`` live logs of ``n`` decisions, for each candidate (the same logs for all)."""
    cfg = GateConfig(min_decisions=min(n, 1000), margin=args.margin, confidence=args.confidence)
    rows = []
    for run in range(runs):
        rng = np.random.default_rng([args.seed, tag, run])
        idx, action = draw_log(world, n, rng, world.live)
        fb = feedback_of(world, idx, action, world.live[idx, action], args.cost_weight)
        for name, dist in candidates.items():
            r = evaluate_gate(fb, dist[idx], config=cfg, estimated_rewards=world.qhat[idx])
            rows.append(
                {"candidate": name, "run": run, "promote": r.promote, "reason": r.reason.value,
                 "estimate": r.estimate, "low": r.low, "high": r.high, "ess": r.ess}
            )  # fmt: skip
    return pd.DataFrame(rows)


def canary_runs(world: World, runs: int, args: argparse.Namespace) -> pd.DataFrame:
    gate = GateConfig(
        method="sequence",
        estimator="DR",
        min_decisions=1000,
        margin=args.margin,
        confidence=args.confidence,
        plan_decisions=args.canary_plan,
    )
    canary = Canary(CanaryConfig(split=args.split, gate=gate, max_decisions=args.canary_max))
    rows = []
    for name, cand in world.candidates.items():
        for run in range(runs):
            rng = np.random.default_rng([args.seed, 7, run])
            state = canary.start()
            while state.decision is CanaryDecision.CONTINUE:
                idx = rng.integers(0, world.pop.n_queries, args.batch)
                served, action, logged = canary_draw(args.split, cand[idx], world.live[idx], rng)
                fb = mixture_feedback(
                    feedback_of(world, idx, action, logged, args.cost_weight),
                    served, args.split, cand[idx], world.live[idx],
                )  # fmt: skip
                state = canary.step(state, fb, cand[idx], world.live[idx], world.qhat[idx])
            assert state.result is not None
            rows.append(
                {"candidate": name, "run": run, "decision": state.decision.value, "decisions": state.n_decisions,
                 "estimate": state.result.estimate}
            )  # fmt: skip
    return pd.DataFrame(rows)


def dr_difference_std(world: World, cand: np.ndarray, logger: np.ndarray | None = None) -> float:
    """Exact per-decision standard deviation of the DR difference: on decisions logged by ``logger`` with both
    distributions known (the canary), or, with ``logger=None``, logged by the live policy and scored against the
    mean logged reward (the gate's ``live=None``)."""
    q, r = world.qhat, world.rewards
    # (N, K): the per-decision difference if model a is logged for query x.
    if logger is None:
        mu = world.live
        d = (cand * q).sum(axis=1, keepdims=True) + cand / mu * (r - q) - r
    else:
        mu = logger
        d = ((cand - world.live) * q).sum(axis=1, keepdims=True) + (cand - world.live) / mu * (r - q)
    mean = float((mu * d).sum(axis=1).mean())
    second = float((mu * d * d).sum(axis=1).mean())
    return math.sqrt(max(second - mean * mean, 0.0))


def sequence_traffic(sd: float, delta: float, args: argparse.Namespace, power: float = 0.8) -> float:
    """Smallest n at which the canary's one-sided lower bound clears the margin with probability ``power``
    (normal approximation at that n), for per-decision standard deviation ``sd`` of the difference."""
    cfg = SequenceConfig(alpha=1 - args.confidence, sides="one-sided", n_opt=args.canary_plan)
    n = np.unique(np.geomspace(10, 5e7, 4000).astype(np.int64))
    radius = cfg.radius(n, sd)
    ok = (delta - args.margin - radius) >= z_quantile(power) * sd / np.sqrt(n)
    return float(n[np.argmax(ok)]) if ok.any() else math.inf


def power_table(world: World, args: argparse.Namespace) -> pd.DataFrame:
    z = z_quantile(args.confidence) + z_quantile(0.8)
    # A candidate that fixes a share of the queries: the oracle's choice on a seeded subset, live's elsewhere. The
    # subsets are nested, so a larger share is a larger effect with a proportionally larger variance.
    gain = ((world.oracle - world.live) * world.rewards).sum(axis=1)
    order = np.random.default_rng([args.seed, 3]).permutation(world.pop.n_queries)
    cum = np.cumsum(gain[order]) / world.pop.n_queries
    family = {"better (LogisticRouter)": world.candidates["better"]}
    for size in [float(s) for s in args.effect_sizes.split(",") if s.strip()]:
        if not args.margin < size < cum[-1]:
            continue
        fixed = order[: int(np.searchsorted(cum, size)) + 1]
        cand = world.live.copy()
        cand[fixed] = world.oracle[fixed]
        family[f"oracle on {fixed.size / world.pop.n_queries:.1%} of queries"] = cand
    rows = []
    runs = args.power_runs or args.n_runs
    for i, (label, cand) in enumerate(family.items()):
        delta, sd = world.truth(cand), dr_difference_std(world, cand)
        mix = args.split * cand + (1 - args.split) * world.live
        sd_canary = dr_difference_std(world, cand, mix)
        n80 = math.ceil((z * sd / (delta - args.margin)) ** 2)
        simulated = math.nan
        if n80 <= args.max_power_traffic:
            res = gate_runs(world, {"c": cand}, n80, runs, args, tag=100 + i)
            simulated = float(res["promote"].mean())
        rows.append(
            {"dataset": world.name, "candidate": label, "effect": delta, "sd_per_decision": sd,
             "gate_decisions_80": n80, "gate_power_simulated": simulated,
             "canary_sd_per_decision": sd_canary, "canary_decisions_80": sequence_traffic(sd_canary, delta, args)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def decided_by(runs: pd.DataFrame, decision: str, share: float = 0.8) -> float:
    """Decisions by which ``share`` of the canary runs reached ``decision`` (inf when fewer ever did)."""
    times = np.sort(np.where(runs["decision"] == decision, runs["decisions"], np.inf))
    return float(times[math.ceil(share * len(times)) - 1]) if len(times) else math.nan


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [
            (f"{v:.0f}" if v.is_integer() and abs(v) >= 1000 else f"{v:.4g}")
            if isinstance(v, float)
            else str(v)
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    args = parse_args(argv)
    # Thousands of small array operations: multi-threaded BLAS only adds contention on a shared machine.
    with threadpool_limits(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    t_start = time.perf_counter()
    summaries, powers = [], []
    for name in [s.strip() for s in args.datasets.split(",") if s.strip()]:
        if name != "sample" and not (args.root / name).is_dir():
            print(f"{name}: skipped ({args.root / name} not found)")
            continue
        t0 = time.perf_counter()
        world = build_world(name, args)
        n = args.traffic or DEFAULT_TRAFFIC.get(name, 20_000)
        truths = {c: world.truth(d) for c, d in world.candidates.items()}
        print(f"{name}: {world.pop.n_queries} queries × {world.pop.n_models} models; candidate − live: "
              + ", ".join(f"{c} {t:+.4f}" for c, t in truths.items()))  # fmt: skip
        gates = gate_runs(world, world.candidates, n, args.n_runs, args, tag=1)
        canaries = canary_runs(world, args.n_runs, args)
        for cand, truth in truths.items():
            g = gates[gates["candidate"] == cand]
            c = canaries[canaries["candidate"] == cand]
            reasons = g["reason"].value_counts()
            summaries.append(
                {"dataset": name, "candidate": cand, "truth": truth, "runs": len(g), "traffic": n,
                 "gate_promote": float(g["promote"].mean()),
                 "gate_refusals": ", ".join(f"{r} {k}" for r, k in reasons.items() if r != "promote") or "-",
                 "mean_estimate": float(g["estimate"].mean()),
                 "canary_promote": float((c["decision"] == "promote").mean()),
                 "canary_rollback": float((c["decision"] == "rollback").mean()),
                 "canary_expire": float((c["decision"] == "expire").mean()),
                 "canary_median_decisions": float(c["decisions"].median()),
                 "canary_decisions_p80": decided_by(c, "promote" if truth > args.margin else "rollback")}
            )  # fmt: skip
        powers.append(power_table(world, args))
        print(f"  done in {time.perf_counter() - t0:.1f} s")
    summary = pd.DataFrame(summaries)
    power = pd.concat(powers, ignore_index=True) if powers else pd.DataFrame()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(args.out_dir / "rollout_gate.csv", index=False)
    power.to_csv(args.out_dir / "rollout_gate_power.csv", index=False)
    elapsed = time.perf_counter() - t_start
    report = "\n\n".join(
        [
            "# Promotion gate and canary on replays with known truth",
            f"Command: `python experiments/rollout_gate.py --n-runs {args.n_runs} --cost-weight {args.cost_weight} "
            f"--epsilon {args.epsilon} --confidence {args.confidence} --margin {args.margin} --split {args.split} "
            f"--batch {args.batch} --canary-max {args.canary_max} --canary-plan {args.canary_plan} --seed {args.seed}`"
            f" ({elapsed:.0f} s)",
            "Gate: DR with a reward model from the training half, one-sided normal bounds at the confidence above, "
            "live = the logger. Canary: the candidate serves the split; DR; one-sided normal-mixture confidence "
            "sequence re-tested after every batch. `truth` = exact candidate − live on the population.",
            "## Decisions\n\n" + markdown(summary),
            "Every deployed policy carries the same ε exploration, so `truth` compares routers, not exploration "
            "levels. `at-margin` is a candidate exactly as good as live + δ: its `gate_promote` is the gate's "
            "error rate (nominal `1 − confidence` for one look) and its `canary_promote` the canary's over all its "
            "looks. The normal bound is slightly optimistic when a few heavily weighted decisions carry the estimate "
            "(the estimate and its standard error then err together), which is also why `gate_power_simulated` "
            "can exceed the 80% the normal formula plans for. `canary_decisions_p80`: decisions by which 80% of the "
            "canaries had promoted (better) or rolled back (worse).",
            "## Traffic for 80% power\n\n"
            "`gate_decisions_80`: decisions for the fixed-sample gate (normal formula with the exact per-decision "
            "standard deviation of the DR difference); `gate_power_simulated`: the gate's promotion rate when "
            "simulated at that traffic; `canary_decisions_80`: canary traffic (all of it, the candidate serving the "
            "split) at which the sequence's lower bound exceeds the margin with 80% probability *at that look* — a "
            "conservative count, since the canary stops at the first batch that clears it (the simulated "
            "`canary_decisions_p80` of the decisions table is the real figure); `canary_sd_per_decision`: the "
            "difference's standard deviation under that mixed logging.\n\n" + markdown(power),
        ]
    )
    (args.out_dir / "rollout_gate.md").write_text(report + "\n")
    print(markdown(summary))
    print(markdown(power))
    print(f"wrote {args.out_dir / 'rollout_gate.md'} ({elapsed:.0f} s)")
    return {"summary": summary, "power": power}


if __name__ == "__main__":
    main()
