"""Plumbing the routers share: seeded sampling, RNG state, greedy ties, the featurizer directory, argument checks,
and :class:`_BaseRouter` (sizing on ``fit``, input checks, seeded ``act`` and the no-pickle save format)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.data.featurizers import COST_FEATURE_PREFIX
from routing_env.errors import (
    ConfigurationError,
    PolicyFormatError,
    ShapeError,
)
from routing_env.policy import (
    check_features,
    check_models,
    read_policy_dir,
    write_policy_dir,
)

FEATURIZER_DIR = "featurizer"


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """JSON-able state of ``rng``'s bit generator (restored exactly by :func:`rng_from_state`)."""
    return dict(rng.bit_generator.state)


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """A generator continuing exactly where the one whose :func:`rng_state` was saved stopped."""
    name = state.get("bit_generator")
    bitgen_cls = getattr(np.random, str(name), None)
    if (
        bitgen_cls is None
        or not isinstance(bitgen_cls, type)
        or not issubclass(bitgen_cls, np.random.BitGenerator)
    ):
        raise PolicyFormatError(f"unknown bit generator {name!r} in a saved RNG state")
    bitgen = bitgen_cls()
    bitgen.state = state
    return np.random.Generator(bitgen)


def greedy_probabilities(scores: np.ndarray) -> np.ndarray:
    """``(n, K)`` one-hot of ``argmax(scores (n, K))``; exact ties share the mass (they are broken at random)."""
    top = scores.max(axis=1, keepdims=True)
    ties = (scores == top).astype(np.float64)
    return ties / ties.sum(axis=1, keepdims=True)


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n,) int64`` one draw per row of ``probs (n, K)`` (inverse-CDF with one uniform per row)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    actions = (cdf <= u[:, None]).sum(axis=1)
    # Guard against u landing on the last cumulative value through rounding, or on a zero-probability column.
    actions = np.minimum(actions, probs.shape[1] - 1)
    bad = probs[np.arange(len(actions)), actions] <= 0
    if bad.any():
        actions[bad] = probs[bad].argmax(axis=1)
    return actions.astype(np.int64)


def draw(probs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(actions (n,) int64, propensities (n,) float64)``: one draw per row of ``probs (n, K)`` and its
    probability."""
    actions = sample_rows(probs, rng)
    return actions, probs[np.arange(len(actions)), actions]


def save_featurizer_dir(featurizer: Any, root: Path) -> None:
    """Save ``featurizer`` (anything with ``save(dir)``) under ``root/featurizer/``."""
    if featurizer is None:
        return
    saver = getattr(featurizer, "save", None)
    if saver is None:
        raise ConfigurationError(
            f"featurizer {type(featurizer).__name__} has no save(dir) method, so the policy cannot be saved with it"
        )
    saver(root / FEATURIZER_DIR)


def write_router_dir(
    root: Path, policy: Any, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> Path:
    """Write ``policy`` (its class is the saved kind) to directory ``root``: ``policy.json`` with ``config``,
    ``arrays.npz`` with ``arrays``, and its ``featurizer`` (if any) under ``root/featurizer/``; returns ``root``."""
    write_policy_dir(root, type(policy), config, arrays)
    save_featurizer_dir(policy.featurizer, root)
    return root


def load_featurizer_dir(root: Path) -> Any:
    """The featurizer saved under ``root/featurizer/``, or ``None`` when the policy has none."""
    if not (root / FEATURIZER_DIR).exists():
        return None
    try:
        from routing_env.data import load_featurizer
    except ImportError as exc:
        raise PolicyFormatError(
            f"{root} carries a featurizer, but routing_env.data.load_featurizer is unavailable: {exc}"
        ) from None
    return load_featurizer(root / FEATURIZER_DIR)


@contextmanager
def reading_saved(
    path: str | Path, cls: type, errors: tuple[type[Exception], ...] = (KeyError, TypeError)
) -> Iterator[tuple[Path, dict[str, Any], dict[str, np.ndarray]]]:
    """``(root, config, arrays)`` of the policy directory ``path`` saved by ``cls``; a missing or malformed entry
    met while restoring it (``errors``: what counts as one) becomes a
    :class:`~routing_env.errors.PolicyFormatError` naming the directory."""
    root = Path(path)
    _, config, arrays = read_policy_dir(root, expect=cls)
    try:
        yield root, config, arrays
    except PolicyFormatError:
        raise
    except errors as exc:
        raise PolicyFormatError(
            f"{root} is not a valid {cls.__name__}: missing or bad entry {exc!r}"
        ) from None


def cost_only_columns(names: Sequence[str] | None) -> tuple[int, ...]:
    """Indices of the feature columns that describe a call's size (``length:…``, see
    :data:`~routing_env.data.featurizers.COST_FEATURE_PREFIX`): the routers' quality estimates do not read them."""
    return tuple(i for i, n in enumerate(names or ()) if str(n).startswith(COST_FEATURE_PREFIX))


def blind(x: np.ndarray, columns: tuple[int, ...]) -> np.ndarray:
    """``x (n, d)`` with the ``columns`` set to 0 (a copy; ``x`` itself when there are none). A constant column
    standardises to 0 and so takes no part in any distance, cluster, ridge or network: it is as if absent, while
    the width the router accepts stays the featurizer's."""
    if not columns:
        return x
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., list(columns)] = 0.0
    return out


def restore_basics(obj: Any, root: Path, config: dict[str, Any]) -> None:
    """Set what a saved router's ``config`` records for every kind: the cost scale, the generator's state (when
    saved), the featurizer (when it carries one) and the cost-only columns (none in a router saved before them)."""
    obj.cost_scale_ = float(config["cost_scale_"])
    columns = tuple(int(i) for i in config.get("cost_only_columns", ()))
    width = config.get("n_features")
    if any(i < 0 or (width is not None and i >= int(width)) for i in columns):
        raise ValueError(f"cost_only_columns {list(columns)} out of range for {width} features")
    obj.cost_only_columns_ = columns
    if "rng_state" in config:
        obj._rng = rng_from_state(config["rng_state"])
    obj.featurizer = load_featurizer_dir(root) if config.get("has_featurizer") else None


def featurize_prompts(policy: Any, prompts: Sequence[str]) -> np.ndarray:
    """``(n, d)`` features of ``prompts`` from ``policy.featurizer``."""
    if policy.featurizer is None:
        raise ConfigurationError(f"{type(policy).__name__} carries no featurizer; pass features instead")
    return np.asarray(policy.featurizer.transform(list(prompts)))


def _check_models_arg(models: Sequence[str]) -> tuple[str, ...]:
    if isinstance(models, str):
        raise ConfigurationError(f"models must be a sequence of model names, got the string {models!r}")
    names = tuple(str(m) for m in models)
    if len(set(names)) != len(names):
        raise ConfigurationError(f"models must be unique, got {list(names)}")
    return names


def _finite(
    name: str, value: float, low: float | None = None, high: float | None = None, *, strict: bool = False
) -> float:
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if strict else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if strict else f"≥ {low:g}")
        hi = "" if high is None else f"≤ {high:g}"
        raise ConfigurationError(
            f"{name} must be a finite number {' and '.join(s for s in (lo, hi) if s)}, got {value!r}"
        )
    return v


# ---------------------------------------------------------------------------------------------- shared base
@dataclass(eq=False, kw_only=True)
class _BaseRouter:
    """Shared plumbing: sizing on ``fit``, input checks, seeded ``act``, and the no-pickle save format.

    Hyperparameters:
        cost_weight: λ (≥ 0) used by routers that trade quality against cost.
        cost_scale: USD per unit of λ; ``None`` = the training dataset's ``resolve_cost_scale("max_mean")``.
        seed: seed of the generator ``act`` samples with.
        featurizer: optional featurizer (``transform``/``save``) saved with the router.
    """

    cost_weight: float = 0.0
    cost_scale: float | None = None
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    models: tuple[str, ...] = field(default=(), init=False)
    n_features: int | None = field(default=None, init=False)
    cost_scale_: float = field(default=1.0, init=False)
    #: Feature columns the router leaves out (set to 0): the ``length:…`` columns of its training features.
    cost_only_columns_: tuple[int, ...] = field(default=(), init=False, repr=False)

    #: Whether the router reads the features (``False``: any width is accepted, only the row count matters).
    uses_features: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an int or None, got {self.seed!r}")
        self._validate()
        self._rng = np.random.default_rng(self.seed)

    def _validate(self) -> None:
        """Subclasses check their own hyperparameters here."""

    def _hyperparameters(self) -> dict[str, Any]:
        return {"cost_weight": self.cost_weight, "cost_scale": self.cost_scale, "seed": self.seed}

    # ------------------------------------------------------------------ fitting
    def _start_fit(self, dataset: LoggedDataset, cost_weight: float | None, featurizer: Any) -> None:
        if not isinstance(dataset, LoggedDataset):
            raise ConfigurationError(f"fit expects a LoggedDataset, got {type(dataset).__name__}")
        if cost_weight is not None:
            self.cost_weight = _finite("cost_weight", cost_weight, 0.0)
        if featurizer is not None:
            self.featurizer = featurizer
        self.models = dataset.models
        self.n_features = dataset.n_features if self.uses_features else None
        self.cost_only_columns_ = cost_only_columns(dataset.feature_names) if self.uses_features else ()
        self.cost_scale_ = (
            float(self.cost_scale) if self.cost_scale is not None else dataset.resolve_cost_scale("max_mean")
        )

    def _require_fitted(self) -> None:
        if not self.models:
            raise ConfigurationError(f"{type(self).__name__} is not fitted: call fit(dataset) first")

    def _features(self, features: Any) -> np.ndarray:
        self._require_fitted()
        return blind(check_features(features, self.n_features), self.cost_only_columns_)

    def _fit_features(self, dataset: LoggedDataset) -> np.ndarray:
        """``(n, d) float64`` training features as the router reads them (cost-only columns at 0)."""
        return blind(np.asarray(dataset.features, dtype=np.float64), self.cost_only_columns_)

    def check_dataset(self, dataset: LoggedDataset) -> None:
        """Refuse a dataset over other models (order matters) or with features of another width."""
        self._require_fitted()
        check_models(self.models, dataset.models)
        if self.n_features is not None and dataset.n_features != self.n_features:
            raise ShapeError(
                f"the dataset has features of width {dataset.n_features}, but this router was fitted on width "
                f"{self.n_features}"
            )

    # ------------------------------------------------------------------ the policy interface
    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``(n, K) float64`` routing distribution for ``features (n, d)``; rows sum to 1."""
        x = self._features(features)
        return self._probabilities(x)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        raise ConfigurationError(f"{type(self).__name__} defines no routing rule")  # pragma: no cover

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actions (n,) int64, propensities (n,) float64)`` drawn from :meth:`action_probabilities`."""
        return draw(self.action_probabilities(features), self._rng)

    def featurize(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` features of ``prompts`` from the router's featurizer."""
        return featurize_prompts(self, prompts)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able fitted scalars and the fitted arrays."""
        return {}, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_state`."""

    def save(self, path: str | Path) -> Path:
        """Write the router to directory ``path`` (``policy.json`` + ``arrays.npz``, no pickle)."""
        root = Path(path)
        state, arrays = self._state()
        config = {
            "hyperparameters": self._hyperparameters(),
            "models": list(self.models),
            "n_features": self.n_features,
            "cost_only_columns": list(self.cost_only_columns_),
            "cost_scale_": self.cost_scale_,
            "rng_state": rng_state(self._rng),
            "has_featurizer": self.featurizer is not None,
            "state": state,
        }
        return write_router_dir(root, self, config, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Restore a router written by :meth:`save`."""
        with reading_saved(path, cls, (KeyError, TypeError, ValueError)) as (root, config, arrays):
            obj = cls(**config["hyperparameters"])
            obj.models = tuple(config["models"])
            obj.n_features = None if config["n_features"] is None else int(config["n_features"])
            restore_basics(obj, root, config)
            obj._restore(dict(config["state"]), arrays)
        return obj


def _one_hot(n: int, k: int, index: int) -> np.ndarray:
    out = np.zeros((n, k))
    out[:, index] = 1.0
    return out


def _mean_rewards(dataset: LoggedDataset, cost_weight: float, scale: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmean(dataset.rewards(cost_weight, cost_scale=scale), axis=0)


def _scalar_action(actions: Any, k: int) -> int:
    if isinstance(actions, np.ndarray):
        if actions.shape not in ((1,), ()):
            raise ShapeError(f"actions must have shape (1,) for one row of features, got {actions.shape}")
        if actions.dtype.kind not in "iu":
            raise ShapeError(f"actions must be integer model indices, got dtype {actions.dtype}")
        a = int(actions.reshape(-1)[0])
    elif isinstance(actions, (int, np.integer)) and not isinstance(actions, bool):
        a = int(actions)
    else:
        raise ShapeError(f"actions must be an integer model index or an array of them, got {actions!r}")
    if not 0 <= a < k:
        raise ShapeError(f"actions must lie in [0, {k}), got {a}")
    return a


def _scalar_value(value: Any, name: str) -> float:
    if isinstance(value, np.ndarray):
        if value.shape not in ((1,), ()):
            raise ShapeError(f"{name} must have shape (1,) for one row of features, got {value.shape}")
        v = float(value.reshape(-1)[0])
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ShapeError(f"{name} must be a number or an array of shape (1,), got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigurationError(f"{name} must be finite, got {v!r}")
    return v
