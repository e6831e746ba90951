"""BudgetPacer: the dual-ascent rule, its bounds and config, its checkpoint, its use in OnlineRouter (λ per decision,
logged; state across a kill -9 and restore), and replays of the bundled sample and LLMRouter against fixed λ."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.online import BudgetConfig, BudgetPacer, OnlineRouter, SQLiteDecisionStore
from agents.online.pacing import PACER_FILE, PacerState
from agents.routers import LinUCB
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError, PolicyFormatError
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade, assert_same_state
from tests.conftest import REPO, shared_dataset
from tests.experiments.test_smoke import load_script

# The data and policy of the router tests; the kill test's child process builds the same two.
SETUP = """
import numpy as np
from agents.routers import LinUCB
from routing_env.data import make_synthetic
data = make_synthetic(n_queries=600, models=4, n_features=6, seed=3)
def fitted():
    return LinUCB(alpha=0.5, seed=1).fit(data.select(np.arange(200)), cost_weight=0.5)
TARGET = float(np.median(data.cost.mean(axis=0)))
"""


@pytest.fixture(scope="module")
def setup() -> dict:
    scope: dict = {}
    exec(SETUP, scope)
    return scope


def serve(router: OnlineRouter, data: LoggedDataset, rows: range) -> list[tuple[str, float, float]]:
    """Route each row and send its logged outcome at once; returns ``(model, λ, propensity)`` per decision."""
    out = []
    for i in rows:
        d = router.route(data.features[i])
        router.feedback(d.decision_id, float(data.quality[i, d.action]), float(data.cost[i, d.action]))
        out.append((d.model, d.cost_weight, d.propensity))
    return out


# ---------------------------------------------------------------------------------------------------- the rule
def test_lambda_rises_above_the_target_and_falls_below_it() -> None:
    up = BudgetPacer(target_per_query=0.01)
    for _ in range(5):
        before = up.cost_weight
        up.observe(0.03, 0.0)
        assert up.cost_weight > before
    down = BudgetPacer(target_per_query=0.01)
    for _ in range(5):
        before = down.cost_weight
        down.observe(0.001, 0.0)
        assert down.cost_weight < before
    on_target = BudgetPacer(target_per_query=0.01)
    on_target.observe(0.01, 0.0)
    assert on_target.cost_weight == 1.0


def test_lambda_stays_within_its_bounds() -> None:
    pacer = BudgetPacer(target_per_query=1.0, min_cost_weight=0.01, max_cost_weight=50.0)
    for _ in range(200):
        pacer.observe(3.0, 0.0)
    assert pacer.cost_weight == 50.0
    for _ in range(2000):
        pacer.observe(0.0, 0.0)
    assert pacer.cost_weight == 0.01
    # An absurd cost (a million times the target) moves λ by a bounded step: no overflow, the top bound holds.
    wild = BudgetPacer(target_per_query=1e-6, max_cost_weight=50.0)
    assert wild.observe(1.0, 0.0) == pytest.approx(math.exp(0.5 * 100 / math.sqrt(1 + 100**2 / 10)))
    for _ in range(50):
        wild.observe(1.0, 0.0)
    assert wild.cost_weight == 50.0 and wild.state().spend == pytest.approx(51.0)


def test_the_step_decays_with_the_residuals_and_settles_at_a_floor_with_a_memory() -> None:
    def step_after(n: int, memory: int | None) -> float:
        pacer = BudgetPacer(target_per_query=1.0, payback=10**9, step_memory=memory)
        for k in range(n):
            pacer.observe(2.0 if k % 2 else 0.0, 0.0)  # residuals ±1: λ oscillates around its start
        before = pacer.cost_weight
        pacer.observe(2.0, 0.0)
        return math.log(pacer.cost_weight / before)

    first = step_after(0, None)
    assert first == pytest.approx(0.5 / math.sqrt(1 + 1 / 10))  # step · g / sqrt(1 + g²/warmup), g = 1
    assert step_after(1000, None) < step_after(100, None) < first
    # Forgetting: after many times its memory the step stops shrinking.
    assert step_after(4000, 200) == pytest.approx(step_after(2000, 200), rel=1e-4)
    assert step_after(4000, 200) > step_after(4000, None)


def test_budget_error_is_paid_back_and_not_banked_while_pinned() -> None:
    pacer = BudgetPacer(target_per_query=1.0, payback=10)
    for _ in range(20):
        pacer.observe(1.5, 0.0)
    s = pacer.state()
    assert s.cost_weight < pacer.config.max_cost_weight
    assert s.error == pytest.approx(s.spend - s.allowed)
    assert s.error == pytest.approx(10.0)
    # With a debt, an outcome exactly on target still raises λ: the aim is below the target.
    before = pacer.cost_weight
    pacer.observe(1.0, 0.0)
    assert pacer.cost_weight > before
    # A budget that never binds: λ sinks to its floor and the unused budget is not saved up for later.
    idle = BudgetPacer(target_per_query=1.0, min_cost_weight=0.5)
    for _ in range(200):
        idle.observe(0.1, 0.0)
    assert idle.cost_weight == 0.5
    frozen = idle.state().error
    for _ in range(100):
        idle.observe(0.1, 0.0)
    assert idle.state().error == frozen > -200 * 0.9


def test_per_hour_target_follows_the_observed_request_rate() -> None:
    pacer = BudgetPacer(target_per_hour=3.0)
    assert pacer.observe(0.5, 1000.0) == 1.0  # the first outcome: no rate yet, λ unchanged
    assert pacer.rate_per_hour() is None and pacer.target_per_query() is None
    for k in range(1, 400):
        pacer.observe(0.01, 1000.0 + 36.0 * k)  # one request every 36 s: 100 per hour
    rate = pacer.rate_per_hour()
    assert rate == pytest.approx(100.0, rel=0.01)
    assert pacer.target_per_query() == pytest.approx(3.0 / rate)
    s = pacer.state()
    assert s.allowed == pytest.approx(3.0 * (399 * 36.0) / 3600.0, rel=0.01)  # R × the hours elapsed
    # Feedback whose decision is older than the newest seen does not move the clock back.
    pacer.observe(0.01, 1000.0)
    assert pacer.state().clock == 1000.0 + 36.0 * 399


def test_per_hour_pacing_spends_the_hourly_target_on_a_replay(setup: dict) -> None:
    data, policy = setup["data"], setup["fitted"]()
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(30.0, size=400))  # Poisson arrivals, 120 per hour
    rate = 120.0
    target_hour = setup["TARGET"] * rate
    pacer = BudgetPacer(target_per_hour=target_hour, rate_window_s=1800.0)
    spend = 0.0
    for t, i in zip(times, range(200, 600)):
        x = data.features[i : i + 1]
        a = int(policy.action_probabilities(x, cost_weight=pacer.cost_weight)[0].argmax())
        c = float(data.cost[i, a])
        policy.update_outcomes(x, np.array([a]), data.quality[i, a : a + 1], np.array([c]))
        pacer.observe(c, float(t))
        spend += c
    hours = (times[-1] - times[0]) / 3600.0
    assert spend / hours == pytest.approx(target_hour, rel=0.05)


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of target_per_query"),
        ({"target_per_query": 1.0, "target_per_hour": 1.0}, "exactly one of target_per_query"),
        ({"target_per_query": 0.0}, r"target_per_query must be a USD amount > 0, got 0.0"),
        ({"target_per_hour": -1.0}, "target_per_hour must be a USD amount > 0"),
        ({"target_per_query": math.nan}, "target_per_query must be a USD amount > 0, got nan"),
        ({"target_per_query": 1.0, "min_cost_weight": 0.0}, "min_cost_weight must be a number > 0"),
        ({"target_per_query": 1.0, "min_cost_weight": 2.0, "max_cost_weight": 1.0}, "must be below"),
        (
            {"target_per_query": 1.0, "initial_cost_weight": 5e3},
            r"initial_cost_weight must lie in .* = \[0.001, 1000.0\], got 5000.0",
        ),
        ({"target_per_query": 1.0, "step": -0.1}, "step must be a number > 0"),
        ({"target_per_query": 1.0, "payback": 0}, "payback must be an integer ≥ 1, got 0"),
        ({"target_per_query": 1.0, "step_memory": 1.5}, "step_memory must be an integer ≥ 1, got 1.5"),
        ({"target_per_query": 1.0, "rate_window_s": 0}, "rate_window_s must be a number of seconds > 0"),
    ],
)
def test_config_refuses_bad_values_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BudgetConfig(**kwargs)


def test_config_from_a_mapping_names_unknown_keys_and_bad_types() -> None:
    cfg = BudgetConfig.from_mapping({"target_per_query": 0.002, "step": 0.3})
    assert cfg == BudgetConfig(target_per_query=0.002, step=0.3)
    assert BudgetConfig.from_mapping(cfg.to_dict()) == cfg
    with pytest.raises(ConfigurationError, match=r"budget: unknown key\(s\) \['target'\]; expected some of"):
        BudgetConfig.from_mapping({"target": 0.002})
    with pytest.raises(ConfigurationError, match=r"budget.step must be a number, got '0.3'"):
        BudgetConfig.from_mapping({"target_per_query": 0.002, "step": "0.3"})
    with pytest.raises(ConfigurationError, match="expected a mapping of settings, got list"):
        BudgetConfig.from_mapping([("target_per_query", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        BudgetPacer(cfg, step=0.1)
    with pytest.raises(ConfigurationError, match="BudgetPacer: unknown key"):
        BudgetPacer(target=1.0)


def test_observe_refuses_bad_outcomes() -> None:
    pacer = BudgetPacer(target_per_query=1.0)
    with pytest.raises(ConfigurationError, match="cost must be a USD amount ≥ 0, got -1"):
        pacer.observe(-1.0, 0.0)
    with pytest.raises(ConfigurationError, match="cost must be a USD amount ≥ 0, got inf"):
        pacer.observe(math.inf, 0.0)
    with pytest.raises(ConfigurationError, match="at must be a UNIX time in seconds, got 'now'"):
        pacer.observe(0.1, "now")  # type: ignore[arg-type]
    assert pacer.state() == PacerState(cost_weight=1.0)  # nothing was counted


# ---------------------------------------------------------------------------------------------------- checkpoint
def test_save_and_load_round_trip_exactly(tmp_path: Path) -> None:
    pacer = BudgetPacer(target_per_hour=2.0)
    for k in range(50):
        pacer.observe(0.01 * (k % 7), 100.0 + 17.0 * k)
    path = pacer.save(tmp_path)
    assert path.name == PACER_FILE and not list(tmp_path.glob("*.tmp"))
    other = BudgetPacer(target_per_hour=2.0)
    assert other.load(tmp_path) is True
    assert other.state() == pacer.state()
    assert other.observe(0.02, 1000.0) == pacer.observe(0.02, 1000.0)
    # Another budget resumes from the saved λ, clipped to its own bounds.
    tight = BudgetPacer(target_per_hour=2.0, max_cost_weight=pacer.cost_weight / 2)
    tight.load(tmp_path)
    assert tight.cost_weight == pacer.cost_weight / 2
    # A checkpoint without a pacer state (saved before pacing): start afresh.
    fresh = BudgetPacer(target_per_hour=2.0)
    fresh.observe(1.0, 0.0)
    assert fresh.load(tmp_path / "elsewhere") is False
    assert fresh.state() == PacerState(cost_weight=1.0)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"format": 99, "state": {}}),
        json.dumps({"format": 1, "state": {"cost_weight": 1.0}}),
        json.dumps({"format": 1, "state": {**PacerState(1.0).to_dict(), "cost_weight": -1.0}}),
        json.dumps({"format": 1, "state": {**PacerState(1.0).to_dict(), "n": 2.5}}),
    ],
)
def test_load_refuses_a_corrupt_state(tmp_path: Path, content: str) -> None:
    (tmp_path / PACER_FILE).write_text(content)
    with pytest.raises(PolicyFormatError, match="is not a budget pacer state"):
        BudgetPacer(target_per_query=1.0).load(tmp_path)


# ---------------------------------------------------------------------------------------------------- in the router
def test_router_routes_with_the_pacers_lambda_and_logs_it(tmp_path: Path, setup: dict) -> None:
    data = setup["data"]
    pacer = BudgetPacer(target_per_query=setup["TARGET"])
    router = OnlineRouter(setup["fitted"](), tmp_path / "d.db", pacer=pacer)
    seen = []
    for i in range(200, 260):
        lam = pacer.cost_weight
        d = router.route(data.features[i])
        assert d.cost_weight == lam
        # The logged distribution is the policy's at that λ, so off-policy evaluation of the log is exact.
        expected = router.policy.action_probabilities(data.features[i : i + 1], cost_weight=lam)[0]
        np.testing.assert_allclose(d.probabilities, expected)
        router.feedback(d.decision_id, float(data.quality[i, d.action]), float(data.cost[i, d.action]))
        seen.append(lam)
    assert len(set(seen)) > 30  # λ moved with the feedback
    assert pacer.state().n == 60
    assert pacer.state().spend == pytest.approx(sum(fb.cost for fb, _ in router.store.feedback()))
    logged = [d.cost_weight for d in router.store.decisions()]
    assert logged == seen
    # An explicit λ overrides the pacer for that decision (and its cost still counts).
    d = router.route(data.features[300], cost_weight=0.25)
    assert d.cost_weight == 0.25
    stats = router.stats()["budget"]
    assert stats["n"] == 60 and stats["cost_weight"] == pacer.cost_weight
    assert f"routing_env_budget_cost_weight {pacer.cost_weight!r}" in router.prometheus()


def test_router_refuses_a_pacer_without_a_cost_aware_policy(tmp_path: Path, setup: dict) -> None:
    pacer = BudgetPacer(target_per_query=1.0)
    with pytest.raises(ConfigurationError, match=r"needs a cost-aware route policy.*FixedPolicy is not one"):
        OnlineRouter(FixedPolicy(("a", "b"), [0.5, 0.5]), tmp_path / "a.db", pacer=pacer)
    with pytest.raises(ConfigurationError, match="LearningThresholdCascade is not one"):
        OnlineRouter(LearningThresholdCascade(("a", "b")), tmp_path / "b.db", pacer=pacer)
    with pytest.raises(ConfigurationError, match="pacer must be a BudgetPacer, got float"):
        OnlineRouter(setup["fitted"](), tmp_path / "c.db", pacer=0.002)  # type: ignore[arg-type]
    router = OnlineRouter(setup["fitted"](), tmp_path / "d.db", pacer=pacer)
    with pytest.raises(ConfigurationError, match="FixedPolicy is not one"):
        router.swap_policy(FixedPolicy(router.models, [0.25] * 4, n_features=6))
    assert isinstance(router.policy, LinUCB)


def test_checkpoints_carry_the_pacer_state_and_restore_replays_after_them(
    tmp_path: Path, setup: dict
) -> None:
    data = setup["data"]
    pacer = BudgetPacer(target_per_query=setup["TARGET"])
    router = OnlineRouter(setup["fitted"](), tmp_path / "d.db", pacer=pacer, checkpoint_every=9)
    serve(router, data, range(200, 300))
    ckpt = router.store.latest_checkpoint()
    assert ckpt is not None and (Path(ckpt.path) / PACER_FILE).is_file()
    assert ckpt.last_feedback_seq < 100  # feedback after the checkpoint is replayed, not read from the file
    router.store.close()  # one writer per store: the restored router takes it over
    again = BudgetPacer(target_per_query=setup["TARGET"])
    restored = OnlineRouter.restore(SQLiteDecisionStore(tmp_path / "d.db"), pacer=again, checkpoint_every=9)
    assert again.state() == pacer.state()
    assert_same_state(restored.policy, router.policy, tmp_path)
    # resync undoes in-memory state the store does not hold (as after a failed group commit).
    before = again.state()
    again.observe(5.0, 0.0)
    assert again.state() != before
    restored.resync()
    assert again.state() == before == pacer.state()
    restored.store.close()


WALL_CLOCK = {"first_at": 0.0, "clock": 0.0, "rate_mass": 0.0}

CHILD = """
import sys
import time
from agents.online import BudgetPacer, OnlineRouter, SQLiteDecisionStore
{setup}
router = OnlineRouter(fitted(), SQLiteDecisionStore(sys.argv[1]), pacer=BudgetPacer(target_per_query=TARGET),
                      checkpoint_every=7)
for i in range(200, 600):
    d = router.route(data.features[i])
    router.feedback(d.decision_id, float(data.quality[i, d.action]), float(data.cost[i, d.action]))
    print(i, flush=True)
    time.sleep(0.002)  # so that the kill lands mid-run however fast the machine
"""


def test_kill_9_and_restore_paces_exactly_as_an_uninterrupted_router(tmp_path: Path, setup: dict) -> None:
    data = setup["data"]
    db = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = textwrap.dedent(CHILD).format(setup=SETUP)
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) >= 330:  # mid-run, between checkpoints or not: wherever the kill lands
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    store = SQLiteDecisionStore(db)
    logged = store.decisions()
    answered = {fb.decision_id for fb, _ in store.feedback()}
    assert 130 <= len(logged) < 400
    # The uninterrupted reference: the same queries, feedback for exactly what the store holds.
    reference = OnlineRouter(
        setup["fitted"](), tmp_path / "ref.db", pacer=BudgetPacer(target_per_query=setup["TARGET"])
    )
    for k, i in enumerate(range(200, 200 + len(logged))):
        d = reference.route(data.features[i])
        assert (d.model, d.cost_weight) == (logged[k].model, logged[k].cost_weight)
        if logged[k].decision_id in answered:
            reference.feedback(d.decision_id, float(data.quality[i, d.action]), float(data.cost[i, d.action]))
    pacer = BudgetPacer(target_per_query=setup["TARGET"])
    restored = OnlineRouter.restore(store, pacer=pacer, checkpoint_every=7)
    # Equal except for the decision times, which are the two runs' own wall clocks (a per-query target does not
    # read them; the per-hour replay is covered by the rate tests).
    assert replace(pacer.state(), **WALL_CLOCK) == replace(reference.pacer.state(), **WALL_CLOCK)  # type: ignore[union-attr]
    assert_same_state(restored.policy, reference.policy, tmp_path)
    rows = range(200 + len(logged), 200 + len(logged) + 40)
    assert serve(restored, data, rows) == serve(reference, data, rows)


# ---------------------------------------------------------------------------------------------------- replays
@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["sample", "llmrouter"])
def test_replay_spends_the_target_with_the_quality_of_the_best_fixed_lambda(
    dataset: str, tmp_path: Path
) -> None:
    root = shared_dataset("llmrouter").parent if dataset == "llmrouter" else REPO
    study = load_script("budget_pacing")
    args = study.parse_args(
        ["--datasets", dataset, "--root", str(root), "--grid", "32", "--target-fractions", "0.15,0.4",
         "--initial-cost-weights", "0.1,10", "--max-queries", "1500", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    runs, frontier, _ = study.study(dataset, args, tmp_path)
    assert len(runs) == 4 and len(frontier) == 32
    for row in runs.itertuples(index=False):
        assert abs(row.spend_error) <= 0.05, row
        # The fixed λ that spend the same, found after the fact: as good as their best, within the replay's
        # noise (the paired standard error of the difference, same queries).
        assert row.quality >= row.best_fixed - 2 * row.se_paired, row
        assert row.quality >= row.interp_fixed - 2 * row.se_paired, row
