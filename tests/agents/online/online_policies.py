"""Small policies for the online-router tests, with exactly known action distributions.

``FixedPolicy`` routes with a fixed distribution (for checking propensities and renormalisation);
``LearningThresholdCascade`` is a minimal learning cascade (stop when the signal beats a threshold learned from returns);
``FragilePolicy`` is a ``FixedPolicy`` whose update can be made to fail or to break it (for the refusal paths).
All save and load without pickle like every policy of the project, so the router can checkpoint them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing_env.policy import read_policy_dir, register_policy, write_policy_dir


@register_policy
class FixedPolicy:
    """Routes with the fixed distribution ``probs`` over ``models``; counts the updates it receives."""

    def __init__(self, models: tuple[str, ...], probs: list[float], n_features: int = 3) -> None:
        self.models = tuple(models)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.n_features = n_features
        self.updates: list[tuple[int, float]] = []

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features))
        return np.repeat(self.probs[None, :], x.shape[0], axis=0)

    def update(self, features: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.updates.extend((int(a), float(r)) for a, r in zip(actions, rewards))

    def save(self, path: str | Path) -> Path:
        upd = np.array(self.updates, dtype=np.float64).reshape(-1, 2)
        return write_policy_dir(
            path,
            type(self),
            {"models": list(self.models), "probs": self.probs.tolist(), "n_features": self.n_features},
            {"updates": upd},
        )

    @classmethod
    def load(cls, path: str | Path) -> Any:
        _, config, arrays = read_policy_dir(path)
        obj = cls(tuple(config["models"]), config["probs"], config["n_features"])
        obj.updates = [(int(a), float(r)) for a, r in arrays["updates"]]
        return obj


@register_policy
class FragilePolicy(FixedPolicy):
    """A :class:`FixedPolicy` whose update raises for a reward of exactly ``FAIL`` and whose distribution turns
    to NaN after learning a reward of exactly ``BREAK`` (state a poisoned update would leave behind)."""

    FAIL = 0.125
    BREAK = 0.375

    def update(self, features: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        if float(rewards[0]) == self.FAIL:
            raise RuntimeError("update failed (injected)")
        super().update(features, actions, rewards)
        if float(rewards[0]) == self.BREAK:
            self.probs = np.full_like(self.probs, np.nan)


@register_policy
class LearningThresholdCascade:
    """Accept when the last signal exceeds a per-step threshold; thresholds move with the observed returns.

    ``stop_probabilities = sigmoid(sharpness · (signal_s − threshold_s))`` after ``s`` calls.
    """

    def __init__(
        self, chain: tuple[str, ...], n_features: int = 3, lr: float = 0.1, sharpness: float = 4.0
    ) -> None:
        self._chain = tuple(chain)
        self.n_features = n_features
        self.lr = lr
        self.sharpness = sharpness
        self.threshold = np.full(len(chain) - 1, 0.5)
        self.history: list[tuple[int, bool, float]] = []

    @property
    def chain(self) -> tuple[str, ...]:
        return self._chain

    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        s = np.atleast_2d(signals)
        step = s.shape[1] - 1
        z = np.clip(self.sharpness * (s[:, -1] - self.threshold[step]), -500.0, 500.0)  # no overflow in exp
        return 1.0 / (1.0 + np.exp(-z))

    def decide(self, features: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.stop_probabilities(features, signals)
        stop = p >= 0.5
        return stop, np.where(stop, p, 1 - p)

    def update(
        self, features: np.ndarray, signals: np.ndarray, stop: np.ndarray, returns: np.ndarray
    ) -> None:
        step = np.atleast_2d(signals).shape[1] - 1
        for st, r in zip(stop, returns):
            # A good return after stopping lowers the bar; a poor one raises it.
            self.threshold[step] += self.lr * (0.5 - float(r)) * (1 if st else -1)
            self.history.append((step, bool(st), float(r)))

    def save(self, path: str | Path) -> Path:
        hist = np.array(self.history, dtype=np.float64).reshape(-1, 3)
        return write_policy_dir(
            path,
            type(self),
            {
                "chain": list(self._chain),
                "n_features": self.n_features,
                "lr": self.lr,
                "sharpness": self.sharpness,
            },
            {"threshold": self.threshold, "history": hist},
        )

    @classmethod
    def load(cls, path: str | Path) -> LearningThresholdCascade:
        _, config, arrays = read_policy_dir(path)
        obj = cls(tuple(config["chain"]), config["n_features"], config["lr"], config["sharpness"])
        obj.threshold = arrays["threshold"].copy()
        obj.history = [(int(s), bool(st), float(r)) for s, st, r in arrays["history"]]
        return obj


def saved_state(policy: Any, path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """``(policy.json text, arrays)`` of ``policy`` saved to ``path`` — equal iff the states are bit-identical."""
    policy.save(path)
    text = (path / "policy.json").read_text()
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return text, arrays


def warm(policy: Any) -> None:
    """Call the policy's (pure) probability methods once, so caches it rebuilds lazily are built in both copies.

    LinUCB-style bandits drop their score cache after a periodic exact refresh and rebuild it on the next call;
    a live router has made that call (it routes), a replay has not. Warming both compares the learned state.
    """
    d = getattr(policy, "n_features", None)
    if d is None:
        return
    x = np.zeros((1, d), dtype=np.float32)
    chain = getattr(policy, "chain", None)
    if isinstance(chain, tuple):
        for s in range(1, len(chain)):
            policy.stop_probabilities(x, np.zeros((1, s)))
    else:
        policy.action_probabilities(x)


def assert_same_state(a: Any, b: Any, tmp: Path) -> None:
    """Fail unless policies ``a`` and ``b`` save to identical JSON (incl. RNG state) and identical arrays."""
    warm(a)
    warm(b)
    ta, aa = saved_state(a, tmp / "a")
    tb, ab = saved_state(b, tmp / "b")
    assert ta == tb
    assert aa.keys() == ab.keys()
    for k in aa:
        assert aa[k].dtype == ab[k].dtype and np.array_equal(aa[k], ab[k]), k
