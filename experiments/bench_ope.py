"""Speed of the off-policy estimators on 10⁶ logged rounds, K = 11 models.

What is timed (median of ``--repeats`` runs after one warm-up, ours and the reference alternating):

1. ``estimators``: DM, IPS, SNIPS and DR each called through its public ``estimate_policy_value(reward, action,
   pscore, action_dist, estimated_rewards=...)`` — input validation included — summed over the four;
2. ``table``: ``routing_env.ope.estimate_policy_value`` for the same four with ``n_bootstrap=0`` and given
   ``estimated_rewards`` (validation once, diagnostics, normal intervals, the DataFrame);
3. ``bootstrap``: ``IPS().estimate_interval(..., method="bootstrap", n_bootstrap=100)`` (Poisson bootstrap);
4. ``reward model fit`` (reported apart, not part of the estimates): ``RewardModel()`` cross-fitted ridge per
   action (penalty by leave-one-out CV), 5 folds, on the same rounds.

BLAS runs on ``--threads`` threads (default 1) for both sides. Each is printed beside a plain-numpy reference measured in the same run: the four formulas written directly
(no checks, no intervals), and a bootstrap that draws 100 index vectors with ``rng.integers`` and averages.
Targets: the four estimators ≤ 100 ms together; 100 bootstrap replicates of IPS ≤ 1 s. Absolute times move with the
machine and its load, so when Open Bandit Pipeline is installed its four estimators are timed in the same run too:
the 100 ms target was set against its ~360 ms, i.e. a ratio ours/obp ≤ 0.28.

    python experiments/bench_ope.py            # 10⁶ rounds
    python experiments/bench_ope.py --n 20000  # smoke size
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import timed_pair
from threadpoolctl import threadpool_limits

from routing_env.ope import DM, DR, IPS, SNIPS, BanditFeedback, RewardModel, estimate_policy_value
from routing_env.ope.feedback import sample_actions

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=1_000_000, help="logged rounds")
parser.add_argument("--k", type=int, default=11, help="models (actions)")
parser.add_argument("--d", type=int, default=8, help="feature width (for the reward-model fit)")
parser.add_argument("--n-bootstrap", type=int, default=100)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_ope.csv")
parser.add_argument("--threads", type=int, default=1, help="BLAS threads, for ours and the reference alike")
args = parser.parse_args()
threadpool_limits(args.threads)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


rng = np.random.default_rng(args.seed)
n, k = args.n, args.k
x = rng.normal(size=(n, args.d)).astype(np.float32)
coef = rng.normal(size=(args.d, k))
logger = softmax(0.5 * (x @ coef))
target = softmax(2.0 * (x @ coef))  # stochastic target, every row and action non-zero: no sparsity shortcut
action = sample_actions(logger, rng)
rows = np.arange(n)
pscore = logger[rows, action]
true_mean = 1 / (1 + np.exp(-(x @ coef)))
reward = (rng.random(n) < true_mean[rows, action]).astype(np.float64)
q_hat = np.clip(true_mean + rng.normal(scale=0.05, size=(n, k)), 0, 1)
print(f"n = {n:,} rounds, K = {k}, stochastic logger and target, estimated_rewards given")


# ---------------------------------------------------------------------- plain-numpy references
def reference_four() -> tuple[float, ...]:
    w = target[rows, action] / pscore
    dm_rows = (target * q_hat).sum(axis=1)
    dm = dm_rows.mean()
    ips = (w * reward).mean()
    snips = (w * reward).sum() / w.sum()
    dr = (dm_rows + w * (reward - q_hat[rows, action])).mean()
    return dm, ips, snips, dr


def reference_bootstrap() -> np.ndarray:
    u = target[rows, action] / pscore * reward
    r = np.random.default_rng(args.seed)
    return np.array([u[r.integers(0, n, n)].mean() for _ in range(args.n_bootstrap)])


# ---------------------------------------------------------------------- routing_env.ope
estimators = (DM(), IPS(), SNIPS(), DR())


def ours_four() -> list[float]:
    return [
        e.estimate_policy_value(reward, action, pscore, target, estimated_rewards=q_hat) for e in estimators
    ]


feedback = BanditFeedback(
    models=[f"m{j}" for j in range(k)], features=x, action=action, propensity=pscore, quality=reward
)


def ours_table() -> pd.DataFrame:
    return estimate_policy_value(target, feedback, estimators, n_bootstrap=0, estimated_rewards=q_hat)


def ours_bootstrap() -> object:
    return IPS().estimate_interval(
        reward, action, pscore, target, n_bootstrap=args.n_bootstrap, seed=args.seed
    )


ref = reference_four()
mine = ours_four()
assert np.allclose(ref, mine, rtol=1e-9), (ref, mine)
results = []
for what, ours_fn, ref_fn, target_s in (
    ("DM+IPS+SNIPS+DR (estimator calls)", ours_four, reference_four, 0.100),
    ("DM+IPS+SNIPS+DR (estimate_policy_value table)", ours_table, reference_four, 0.100),
    (f"IPS bootstrap, B = {args.n_bootstrap}", ours_bootstrap, reference_bootstrap, 1.0),
):
    t_ours, t_ref, ratio = timed_pair(ours_fn, ref_fn, args.repeats)
    results.append(
        {
            "what": what,
            "n": n,
            "k": k,
            "ours_s": t_ours,
            "numpy_reference_s": t_ref,
            "ratio_ours_over_reference": ratio,
            "target_s": target_s,
            "meets_target": t_ours <= target_s,
        }
    )

# Open Bandit Pipeline, when installed (obp 0.4.1 installs with `pip install --no-deps obp==0.4.1 mypy_extensions seaborn`
# beside torch and scikit-learn): the same four estimators through its public estimator classes, same run.
try:
    from obp.ope import (  # type: ignore[import-not-found]
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
    )
except ImportError:
    print("obp: not installed, no Open Bandit Pipeline comparison")
else:
    obp_estimators = (
        DirectMethod(),
        InverseProbabilityWeighting(),
        SelfNormalizedInverseProbabilityWeighting(),
        DoublyRobust(),
    )
    target_3d, q_hat_3d, position = target[:, :, None], q_hat[:, :, None], np.zeros(n, dtype=np.int64)

    def obp_four() -> list[float]:
        return [
            e.estimate_policy_value(
                reward=reward,
                action=action,
                pscore=pscore,
                action_dist=target_3d,
                estimated_rewards_by_reg_model=q_hat_3d,
                position=position,
            )
            for e in obp_estimators
        ]

    assert np.allclose(obp_four(), ref, rtol=1e-9)
    t_ours, t_obp, ratio = timed_pair(ours_table, obp_four, args.repeats)
    results.append(
        {
            "what": "DM+IPS+SNIPS+DR table vs Open Bandit Pipeline's four estimators (reference = obp)",
            "n": n,
            "k": k,
            "ours_s": t_ours,
            "numpy_reference_s": t_obp,
            "ratio_ours_over_reference": ratio,
            "target_s": float("nan"),
            "meets_target": ratio < 1.0,
        }
    )

fit_rows = min(n, 200_000)
t0 = time.perf_counter()
RewardModel().fit_predict(x[:fit_rows], action[:fit_rows], reward[:fit_rows], k)
t_fit = time.perf_counter() - t0
results.append(
    {
        "what": f"RewardModel fit_predict (ridge per action, penalty by LOO CV, 5 folds) on {fit_rows:,} rounds — not in the above",
        "n": fit_rows,
        "k": k,
        "ours_s": t_fit,
        "numpy_reference_s": float("nan"),
        "ratio_ours_over_reference": float("nan"),
        "target_s": float("nan"),
        "meets_target": True,
    }
)
frame = pd.DataFrame(results)
with pd.option_context("display.width", 200, "display.max_colwidth", 80):
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
args.out.parent.mkdir(parents=True, exist_ok=True)
frame.to_csv(args.out, index=False)
print(f"wrote {args.out}")
