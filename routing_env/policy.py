"""The `Policy` protocol every router implements, and the on-disk format policies share.

A policy maps query features to a distribution over the K models:

- :class:`Policy`: ``models`` (K names), ``n_features`` (d, or ``None`` when any width is accepted) and
  ``action_probabilities(features (n, d)) -> (n, K)`` with rows summing to 1. Metrics and off-policy evaluation
  only need this.
- :class:`LearningPolicy`: adds ``act(features) -> (actions (n,) int64, propensities (n,) float64)`` drawn with
  the policy's own seeded RNG, and ``update(features, actions, rewards)`` (a batch; one round is a batch of one).
- :class:`CostAwarePolicy`: learns quality and cost separately, so the cost weight λ can change at decision time
  without retraining: ``update_outcomes(features, actions, quality, cost)`` and a settable ``cost_weight``.

Saved policies are a directory holding ``policy.json`` (kind, hyperparameters, model names, feature width) and
``arrays.npz`` (numeric state, loaded with ``allow_pickle=False``), plus ``featurizer/`` when the policy carries
one. Nothing is ever unpickled: :func:`load_policy` only instantiates classes registered with
:func:`register_policy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from routing_env.errors import ModelMismatchError, PolicyFormatError, ShapeError

FORMAT_VERSION = 1
POLICY_FILE = "policy.json"
ARRAYS_FILE = "arrays.npz"


@runtime_checkable
class Policy(Protocol):
    """A router: a distribution over ``models`` for each query."""

    @property
    def models(self) -> tuple[str, ...]: ...

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``features (n, d) float32`` → ``(n, K) float64``, rows summing to 1."""
        ...


@runtime_checkable
class LearningPolicy(Policy, Protocol):
    """A policy that acts with its own seeded RNG and learns from bandit feedback."""

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``features (n, d)`` → ``(actions (n,) int64, propensities (n,) float64)``."""
        ...

    def update(self, features: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from ``features (n, d)``, ``actions (n,)`` and ``rewards (n,)``."""
        ...


@runtime_checkable
class CostAwarePolicy(LearningPolicy, Protocol):
    """A learner that models quality and cost (USD) separately and scores ``q̂ − cost_weight·ĉ/cost_scale``."""

    cost_weight: float

    def update_outcomes(
        self, features: np.ndarray, actions: np.ndarray, quality: np.ndarray, cost: np.ndarray
    ) -> None:
        """Learn from ``quality (n,)`` in [0, 1] and ``cost (n,)`` USD of the chosen ``actions (n,)``."""
        ...


@runtime_checkable
class CascadePolicy(Protocol):
    """A stop-or-escalate policy over a fixed chain of models (cheap first).

    After the first ``s`` models of ``chain`` were called (``1 ≤ s < len(chain)``), the policy sees the query
    features and the ``s`` signals those calls returned (never their quality) and decides to accept the last
    answer or to call model ``s``.
    """

    @property
    def chain(self) -> tuple[str, ...]:
        """Model names in call order."""
        ...

    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """``features (n, d)``, ``signals (n, s)`` → ``(n,) float64`` probability of accepting now."""
        ...

    def decide(self, features: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(stop (n,) bool, propensity (n,) float64)`` drawn with the policy's seeded RNG."""
        ...

    def update(
        self, features: np.ndarray, signals: np.ndarray, stop: np.ndarray, returns: np.ndarray
    ) -> None:
        """Learn from decisions taken after ``s = signals.shape[1]`` calls and the ``returns (n,)`` that followed
        them (quality of the accepted answer minus the cost-weighted cost of the calls made after the decision).
        """
        ...


# ---------------------------------------------------------------------- input checks shared by policies
def check_features(features: np.ndarray | Sequence[Sequence[float]], n_features: int | None) -> np.ndarray:
    """Return ``features`` as a 2-D float array, refusing a wrong width or non-finite values.

    A single 1-D vector is treated as a batch of one.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ShapeError(f"features must have shape (n, d), got {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ShapeError(
            f"features have width {x.shape[1]}, but this policy was fitted on width {n_features}"
        )
    if not np.isfinite(x).all():
        raise ShapeError("features must be finite, got NaN or inf")
    return x


def check_models(expected: Sequence[str], given: Sequence[str], what: str = "dataset") -> None:
    """Refuse a model list that differs from the policy's (order matters: it indexes the actions)."""
    if tuple(expected) != tuple(given):
        raise ModelMismatchError(
            f"the policy routes over models {list(expected)}, but the {what} has {list(given)}"
        )


# ---------------------------------------------------------------------- save / load without pickle
#: Entry-point group through which installed packages declare their policy classes (``name = "module:Class"``).
ENTRY_POINT_GROUP = "routing_env.policies"
# Kinds written before policies were saved under their registered names: the class's module path at the time.
_LEGACY_MODULES = ("agents.bandits", "agents.baselines", "agents.cascade", "agents.ppo")
_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T", bound=type)


def _kind_name(cls: type) -> str:
    """The name a class is saved and registered under: ``policy_kind`` when it sets one, else its class name."""
    return str(getattr(cls, "policy_kind", None) or cls.__name__)


def register_policy(cls: _T) -> _T:
    """Class decorator: make ``cls`` loadable by :func:`load_policy` under its name (``cls.__name__``, or a
    ``policy_kind`` class attribute).

    Raises:
        PolicyFormatError: another class is already registered under that name.
    """
    name = _kind_name(cls)
    other = _REGISTRY.get(name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise PolicyFormatError(
            f"policy kind {name!r} is already registered by {other.__module__}.{other.__qualname__}; "
            f"set a distinct policy_kind on {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[name] = cls
    return cls


def _canonical_kind(kind: str) -> str:
    """``kind`` as registered: a legacy ``<module>.<Class>`` of this project's old layout becomes ``Class``."""
    module, _, name = kind.rpartition(".")
    return name if module in _LEGACY_MODULES else kind


def _lookup_kind(kind: str) -> type | None:
    """The class registered as ``kind``; otherwise the one an installed package declares under that name in the
    :data:`ENTRY_POINT_GROUP` entry points (imported then, so it registers). Never a module named by the file."""
    cls = _REGISTRY.get(kind)
    if cls is not None:
        return cls
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        try:
            loaded = ep.load()
        except ImportError as exc:
            raise PolicyFormatError(
                f"policy kind {kind!r} needs {ep.value!r}, which cannot be imported: {exc}"
            ) from None
        if isinstance(loaded, type):
            _REGISTRY.setdefault(kind, loaded)
        return _REGISTRY.get(kind)
    return None


def write_policy_dir(
    path: str | Path,
    kind: type | str,
    config: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``policy.json`` (``kind``, JSON-able ``config``) and ``arrays.npz`` into directory ``path``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    name = kind if isinstance(kind, str) else _kind_name(kind)
    doc = {"format_version": FORMAT_VERSION, "kind": name, "config": dict(config)}
    (root / POLICY_FILE).write_text(json.dumps(doc, indent=1, default=_json_default))
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in (arrays or {}).items()}
    np.savez(root / ARRAYS_FILE, **payload)
    return root


def read_policy_dir(
    path: str | Path, expect: type | None = None
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read ``(kind, config, arrays)`` written by :func:`write_policy_dir`.

    With ``expect``, a directory holding another kind of policy is refused.
    """
    root = Path(path)
    doc_path = root / POLICY_FILE
    if not doc_path.is_file():
        raise PolicyFormatError(f"{root} is not a saved policy: {POLICY_FILE} is missing")
    try:
        doc = json.loads(doc_path.read_text())
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"{doc_path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "kind" not in doc or "config" not in doc:
        raise PolicyFormatError(f"{doc_path} lacks 'kind' and 'config'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise PolicyFormatError(
            f"{doc_path} has format_version {doc.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    if not isinstance(doc["kind"], str):
        raise PolicyFormatError(f"{doc_path}: 'kind' must be a string, got {type(doc['kind']).__name__}")
    kind = _canonical_kind(doc["kind"])
    if expect is not None and kind != _kind_name(expect):
        raise PolicyFormatError(f"{root} holds a {kind!r}, not a {_kind_name(expect)!r}")
    arrays: dict[str, np.ndarray] = {}
    arrays_path = root / ARRAYS_FILE
    if arrays_path.is_file():
        try:
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except ValueError as exc:
            raise PolicyFormatError(
                f"{arrays_path} holds objects that need pickle, which is refused: {exc}"
            ) from None
    return kind, dict(doc["config"]), arrays


def load_policy(path: str | Path) -> Any:
    """Load any registered policy saved with its ``save(path)`` method.

    The class is the one registered (:func:`register_policy`) under the ``kind`` recorded in ``policy.json``, or
    declared under that name in the :data:`ENTRY_POINT_GROUP` entry points of an installed package. The file never
    names a module to import, and nothing is unpickled.
    """
    kind, _, _ = read_policy_dir(path)
    cls = _lookup_kind(kind)
    if cls is None:
        raise PolicyFormatError(f"unknown policy kind {kind!r} in {path}; registered: {sorted(_REGISTRY)}")
    loader: Callable[[str | Path], Any] = cls.load  # type: ignore[attr-defined]
    return loader(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to policy.json")
