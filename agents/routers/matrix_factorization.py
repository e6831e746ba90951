"""RouteLLM's matrix-factorisation router for a strong/weak pair (:class:`MatrixFactorizationRouter`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.routers._common import _BaseRouter, _finite
from agents.routers.predictive import _standardize
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    ShapeError,
)
from routing_env.policy import (
    register_policy,
)

__all__ = ["MatrixFactorizationRouter"]


# ---------------------------------------------------------------------------------------------- RouteLLM MF
@register_policy
@dataclass(eq=False, kw_only=True)
class MatrixFactorizationRouter(_BaseRouter):
    """RouteLLM's matrix-factorisation router for a strong and a weak model.

    A bilinear score ``s(m, x) = cᵀ(v_m ⊙ (W·x̃ + b))`` (``x̃`` the standardised features, ``v_m`` a learned model
    embedding) gives ``P(strong beats weak | x) = σ(s(strong, x) − s(weak, x))``, trained by logistic loss on the
    training queries where the strong model's quality is strictly higher (label 1) or not (label 0), with
    full-batch Adam. A query goes to the strong model when that probability is ≥ ``threshold``; use
    :meth:`calibrate_threshold` to pick the threshold that sends a target share of queries to the strong model.

    Args:
        strong, weak: model names; default (two-model datasets only) the more and the less expensive one.
        threshold: in [0, 1].
        dim: embedding width.
        l2: L2 penalty on all parameters.
        learning_rate, epochs: Adam step size and full-batch steps.
    """

    strong: str | None = None
    weak: str | None = None
    threshold: float = 0.5
    dim: int = 16
    l2: float = 1e-4
    learning_rate: float = 0.02
    epochs: int = 300

    def _validate(self) -> None:
        self.threshold = _finite("threshold", self.threshold, 0.0, 1.0)
        if int(self.dim) < 1:
            raise ConfigurationError(f"dim must be ≥ 1, got {self.dim!r}")
        if int(self.epochs) < 1:
            raise ConfigurationError(f"epochs must be ≥ 1, got {self.epochs!r}")
        self.l2 = _finite("l2", self.l2, 0.0)
        self.learning_rate = _finite("learning_rate", self.learning_rate, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            "strong": self.strong,
            "weak": self.weak,
            "threshold": self.threshold,
            "dim": int(self.dim),
            "l2": self.l2,
            "learning_rate": self.learning_rate,
            "epochs": int(self.epochs),
        }

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> MatrixFactorizationRouter:
        if dataset.n_features == 0:
            raise ShapeError(
                "MatrixFactorizationRouter needs query features, and the dataset has none (width 0)"
            )
        strong, weak = self.strong, self.weak
        if strong is None or weak is None:
            if dataset.n_models != 2:
                raise ConfigurationError(
                    f"name strong= and weak= for a dataset with {dataset.n_models} models {list(dataset.models)}"
                )
            order = np.argsort(np.nan_to_num(dataset.mean_cost()))
            weak, strong = dataset.models[int(order[0])], dataset.models[int(order[1])]
        for name, value in (("strong", strong), ("weak", weak)):
            if value not in dataset.models:
                raise ModelMismatchError(
                    f"{name}={value!r} is not in the dataset's models {list(dataset.models)}"
                )
        if strong == weak:
            raise ConfigurationError(f"strong and weak must differ, both are {strong!r}")
        self._start_fit(dataset, cost_weight, featurizer)
        self.strong_, self.weak_ = dataset.models.index(strong), dataset.models.index(weak)
        qs, qw = dataset.quality[:, self.strong_], dataset.quality[:, self.weak_]
        rows = ~(np.isnan(qs) | np.isnan(qw))
        if rows.sum() < 2:
            raise PartialInformationError(
                "need queries where both the strong and the weak model were observed"
            )
        x = self._fit_features(dataset)[rows]
        self.mean_, self.scale_ = _standardize(x)
        y = (qs[rows] > qw[rows]).astype(np.float64)
        self._train((x - self.mean_) / self.scale_, y)
        return self

    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        n, d = x.shape
        m = int(self.dim)
        params = {
            "W": rng.normal(0.0, 1.0 / math.sqrt(d), size=(m, d)),
            "b": np.zeros(m),
            "v": rng.normal(0.0, 1.0, size=(2, m)),  # rows: weak, strong
            "c": rng.normal(0.0, 1.0 / math.sqrt(m), size=m),
        }
        first = {k: np.zeros_like(v) for k, v in params.items()}
        second = {k: np.zeros_like(v) for k, v in params.items()}
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for t in range(1, int(self.epochs) + 1):
            u = x @ params["W"].T + params["b"]
            diff = params["v"][1] - params["v"][0]
            e = params["c"] * diff
            logit = u @ e
            g = (_sigmoid(logit) - y) / n
            du = g[:, None] * e[None, :]
            s = g @ u
            grads = {
                "W": du.T @ x + self.l2 * params["W"],
                "b": du.sum(axis=0) + self.l2 * params["b"],
                "v": np.stack([-s * params["c"], s * params["c"]]) + self.l2 * params["v"],
                "c": s * diff + self.l2 * params["c"],
            }
            for key, grad in grads.items():
                first[key] = beta1 * first[key] + (1 - beta1) * grad
                second[key] = beta2 * second[key] + (1 - beta2) * grad**2
                mhat = first[key] / (1 - beta1**t)
                vhat = second[key] / (1 - beta2**t)
                params[key] = params[key] - self.learning_rate * mhat / (np.sqrt(vhat) + eps)
        self.W_, self.b_, self.v_, self.c_ = params["W"], params["b"], params["v"], params["c"]

    def strong_win_probability(self, features: np.ndarray) -> np.ndarray:
        """``(n,)`` predicted probability that the strong model answers ``features (n, d)`` better."""
        x = self._features(features)
        return self._win(x)

    def _win(self, x: np.ndarray) -> np.ndarray:
        u = ((x - self.mean_) / self.scale_) @ self.W_.T + self.b_
        return _sigmoid(u @ (self.c_ * (self.v_[1] - self.v_[0])))

    def calibrate_threshold(self, features: np.ndarray, strong_share: float) -> float:
        """Set (and return) the threshold that sends ``strong_share`` ∈ [0, 1] of ``features (n, d)`` to the
        strong model (RouteLLM's calibration on a sample of expected traffic)."""
        share = _finite("strong_share", strong_share, 0.0, 1.0)
        p = np.sort(self.strong_win_probability(features))
        n = p.size
        n_strong = round(share * n)
        if n_strong <= 0:
            threshold = float(np.nextafter(p[-1], np.inf)) if p[-1] < 1.0 else 1.0
        elif n_strong >= n:
            threshold = float(p[0])
        else:
            threshold = float(p[n - n_strong])
        self.threshold = min(max(threshold, 0.0), 1.0)
        return self.threshold

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        strong = self._win(x) >= self.threshold
        out = np.zeros((x.shape[0], len(self.models)))
        out[strong, self.strong_] = 1.0
        out[~strong, self.weak_] = 1.0
        return out

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"strong": self.strong_, "weak": self.weak_}, {
            "W": self.W_,
            "b": self.b_,
            "v": self.v_,
            "c": self.c_,
            "mean": self.mean_,
            "scale": self.scale_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.strong_, self.weak_ = int(state["strong"]), int(state["weak"])
        self.W_, self.b_, self.v_, self.c_ = arrays["W"], arrays["b"], arrays["v"], arrays["c"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
