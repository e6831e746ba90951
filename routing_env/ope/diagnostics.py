"""Checks that tell when an off-policy estimate should not be trusted, emitted as :class:`OPEWarning`.

- **Support violation**: the target puts probability on actions the logger never takes. Importance weighting
  cannot see those outcomes (IPS is biased down, DR falls back on the reward model). With the logger's full
  distribution (simulated logs) the check is per round; otherwise an action that never appears in the log (at a
  given position) counts as unsupported.
- **Tiny propensities**: a propensity below ``tiny_propensity`` gives weights up to ``1/p``; one such round can
  dominate IPS. (Zero propensities are refused earlier, by :class:`BanditFeedback` and the estimators.)
- **Small effective sample size**: Kish's ``ESS = (Σw)²/Σw²`` of the importance weights, below ``min_ess`` rounds or
  ``min_ess_ratio·n``, means a handful of rounds carry the estimate.
- **Mean weight far from 1**: with full support ``E[w] = 1``; a sample mean far from it flags wrong propensities
  or a support problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from routing_env.errors import ConfigurationError, OPEWarning, warn


@dataclass(frozen=True)
class DiagnosticThresholds:
    """When :func:`diagnose` warns.

    Args:
        tiny_propensity: propensities below this are "tiny".
        min_ess: warn when the effective sample size is below this many rounds...
        min_ess_ratio: ...or below this share of the rounds.
        weight_mean_tolerance: warn when ``|mean(w) − 1|`` exceeds this many standard errors (and 0.05).
    """

    tiny_propensity: float = 1e-4
    min_ess: float = 100.0
    min_ess_ratio: float = 0.01
    weight_mean_tolerance: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.tiny_propensity < 1.0:
            raise ConfigurationError(f"tiny_propensity must be in [0, 1), got {self.tiny_propensity!r}")
        if self.min_ess < 0 or not 0.0 <= self.min_ess_ratio <= 1.0:
            raise ConfigurationError(
                f"min_ess must be ≥ 0 and min_ess_ratio in [0, 1], got {self.min_ess!r}, {self.min_ess_ratio!r}"
            )
        if self.weight_mean_tolerance <= 0:
            raise ConfigurationError(f"weight_mean_tolerance must be > 0, got {self.weight_mean_tolerance!r}")


@dataclass(frozen=True)
class Diagnostics:
    """What :func:`diagnose` found on one (log, target) pair.

    Attributes:
        n_rounds: n.
        ess: effective sample size of the unclipped importance weights (rounds).
        ess_ratio: ``ess / n``.
        mean_weight: mean importance weight (≈ 1 under full support and correct propensities).
        max_weight: largest importance weight.
        min_propensity: smallest logged propensity.
        n_tiny_propensity: rounds with a propensity below the threshold.
        unsupported_mass: mean target probability on actions the logger does not take (0 = no violation).
        unsupported_actions: indices of actions with target mass and no logger support (in some round/position).
        n_deterministic: rounds logged with propensity 1, where the logger had no other choice: no policy that
            chooses differently there can be evaluated on them.
        warnings: the messages emitted (also available when warnings are filtered out).
    """

    n_rounds: int
    ess: float
    ess_ratio: float
    mean_weight: float
    max_weight: float
    min_propensity: float
    n_tiny_propensity: int
    unsupported_mass: float
    unsupported_actions: tuple[int, ...]
    n_deterministic: int
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.warnings


def diagnose(
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    *,
    position: np.ndarray | None = None,
    logging_dist: np.ndarray | None = None,
    thresholds: DiagnosticThresholds | None = None,
    emit: bool = True,
    models: tuple[str, ...] | None = None,
    target_prob: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> Diagnostics:
    """Check a (log, target) pair and warn (:class:`~routing_env.errors.OPEWarning`) about what looks unreliable.

    Args:
        action: ``(n,)`` logged actions.
        pscore: ``(n,)`` logged propensities (> 0).
        action_dist: ``(n, K)`` or ``(n, K, P)`` target distribution.
        position: ``(n,)`` logged slots (needed with a 3-D ``action_dist``).
        logging_dist: ``(n, K)`` logger's full distribution, when known (a per-round support check).
        thresholds: when to warn.
        emit: emit the warnings (they are recorded in the result either way).
        models: model names, to name the unsupported actions in the message.
        target_prob: ``(n,)`` target probability of each logged action (at its position), when already computed.
        weights: ``(n,)`` the unclipped importance weights ``target_prob / pscore``, when already computed.
    """
    th = thresholds or DiagnosticThresholds()
    a = np.asarray(action, dtype=np.int64)
    p = np.asarray(pscore, dtype=np.float64)
    dist = np.asarray(action_dist, dtype=np.float64)
    n = a.shape[0]
    rows = np.arange(n)
    pos = None if position is None else np.asarray(position, dtype=np.int64)
    flat = dist[rows, :, pos] if dist.ndim == 3 and pos is not None else dist
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
    else:
        pi = flat[rows, a] if target_prob is None else np.asarray(target_prob, dtype=np.float64)
        w = pi / p
    s1, s2 = float(w.sum()), float(np.dot(w, w))
    ess = s1 * s1 / s2 if s2 > 0 else 0.0
    mean_w = s1 / n
    # Weights are O(1) around their mean, so the one-pass variance loses nothing to cancellation here.
    se_w = math.sqrt(max(s2 - n * mean_w * mean_w, 0.0) / (n - 1) / n) if n > 1 else math.inf
    # A propensity of 1 says the logger had no choice on that round: its distribution there is known exactly
    # (all mass on the logged action), so the target's mass elsewhere is unsupported, whatever other rounds show.
    deterministic = p >= 1.0 - 1e-12
    n_det = int(np.count_nonzero(deterministic))
    mass_rows, unsupported, det_mass = _unsupported_mass(a, flat, dist, pos, logging_dist, deterministic)
    mass = float(mass_rows.mean())
    messages: list[str] = []
    support = _support_message(
        mass, det_mass, n_det, n, s1 == 0, [models[j] if models else str(j) for j in unsupported]
    )
    if support:
        messages.append(support)
    tiny = int(np.count_nonzero(p < th.tiny_propensity))
    if tiny:
        messages.append(
            f"{tiny} of {n} rounds have a propensity below {th.tiny_propensity:g} (min {p.min():.3g}); their "
            f"importance weights reach {float(w.max()):.3g}. Consider clipping the weights (max_weight=...), "
            "flooring the propensities (min_pscore=...), or SNIPS/DR"
        )
    if s1 > 0 and (ess < th.min_ess or ess < th.min_ess_ratio * n):
        messages.append(
            f"small effective sample size: ESS = {ess:.1f} of {n} rounds ({ess / n:.2%}); the estimate rests on a "
            "few heavily weighted rounds"
        )
    if mass <= 1e-12 and abs(mean_w - 1.0) > max(0.05, th.weight_mean_tolerance * se_w):
        messages.append(
            f"mean importance weight is {mean_w:.3f} (expected ≈ 1 ± {se_w:.3f}): the propensities may not be the "
            "logger's probabilities of the logged actions"
        )
    if emit:
        for m in messages:
            warn(m, OPEWarning, stacklevel=None)
    return Diagnostics(
        n_rounds=n,
        ess=ess,
        ess_ratio=ess / n,
        mean_weight=mean_w,
        max_weight=float(w.max()),
        min_propensity=float(p.min()),
        n_tiny_propensity=tiny,
        unsupported_mass=mass,
        unsupported_actions=unsupported,
        n_deterministic=n_det,
        warnings=tuple(messages),
    )


def _unsupported_mass(
    a: np.ndarray,
    flat: np.ndarray,
    dist: np.ndarray,
    pos: np.ndarray | None,
    logging_dist: np.ndarray | None,
    deterministic: np.ndarray,
) -> tuple[np.ndarray, tuple[int, ...], float]:
    """``(mass (n,), actions, deterministic mass)``: per round, the target probability on actions the logger
    cannot take there; the actions that carry such mass somewhere; and the part of ``mean(mass)`` that comes
    from the ``deterministic`` rounds (propensity 1).

    Only the (round, action) cells the logger cannot produce are read, so the common case of full support costs
    nothing beyond finding that there are none.
    """
    n, k = flat.shape
    mass_rows = np.zeros(n)
    unsupported: set[int] = set()
    if logging_dist is not None and dist.ndim == 2:
        ld = np.asarray(logging_dist)
        if ld.min() <= 0:
            hole = ld <= 0
            mass_rows = np.where(hole, flat, 0.0).sum(axis=1)
            unsupported.update(np.flatnonzero((hole & (flat > 0)).any(axis=0)).tolist())
    elif dist.ndim == 3 and pos is not None:
        seen = np.zeros((k, dist.shape[2]), dtype=bool)
        seen[a, pos] = True
        for j, slot in np.argwhere(~seen):
            rows_at = pos == slot
            col = flat[rows_at, j]
            if (col > 0).any():
                mass_rows[rows_at] += col
                unsupported.add(int(j))
    else:
        seen1 = np.bincount(a, minlength=k) > 0
        for j in np.flatnonzero(~seen1):
            col = flat[:, j]
            if (col > 0).any():
                mass_rows += col
                unsupported.add(int(j))
    det_mass = 0.0
    if logging_dist is None and deterministic.any():
        rows = np.flatnonzero(deterministic)
        others = flat[rows].copy()
        others[np.arange(rows.size), a[rows]] = 0.0
        mass_rows[rows] = others.sum(axis=1)
        unsupported.update(np.flatnonzero((others > 0).any(axis=0)).tolist())
        det_mass = float(mass_rows[rows].sum()) / n
    return mass_rows, tuple(sorted(unsupported)), det_mass


def _support_message(
    mass: float, det_mass: float, n_det: int, n: int, no_weight: bool, names: list[str]
) -> str | None:
    """The support diagnostic (``None`` with full support), naming the cause: no logged action the target would
    choose, a deterministic logger, or actions the logger never takes."""
    if mass <= 1e-12 and not no_weight:
        return None
    shown = f"{', '.join(names[:8])}{' …' if len(names) > 8 else ''}"
    parts = []
    if no_weight:
        parts.append(
            "no support: the target never chooses a logged action (every importance weight is 0), so IPS estimates "
            "0, SNIPS, SNDR and Replay are undefined (NaN) and DR rests on the reward model alone"
        )
    if det_mass > 1e-12:
        where = (
            "the logging policy was deterministic (every propensity is 1)"
            if n_det == n
            else f"the logging policy was deterministic on {n_det} of {n} rounds (propensity 1)"
        )
        parts.append(
            f"{'' if no_weight else 'no support: '}{where}, so the logs hold only the model it chose there and no "
            f"other policy can be evaluated on those rounds; the target puts {det_mass:.3%} of its probability on "
            f"models the logger never tried there ({shown}). Enable exploration in the policy that serves and logs "
            "(e.g. LinUCB(epsilon=0.05)) and collect new logs"
        )
    elif not no_weight:
        parts.append(
            f"support violation: the target puts {mass:.3%} of its probability on actions the logger never takes "
            f"({shown}); IPS/SNIPS cannot see those outcomes and DR relies on the reward model there"
        )
    return "; ".join(parts)
