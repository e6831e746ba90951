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
:func:`register_policy`. :func:`read_policy_dir` checks a directory against :class:`PolicyLimits` before it reads
any state (sizes declared by the files, the width the config declares, finite values), so a hostile or corrupt
directory is a :class:`~routing_env.errors.PolicyFormatError`, never a memory blow-up.
"""

from __future__ import annotations

import fnmatch
import json
import math
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PolicyFormatError,
    RoutingEnvError,
    ShapeError,
)

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


@dataclass(frozen=True)
class PolicyLimits:
    """What :func:`read_policy_dir` accepts, checked before any state is read or allocated.

    Attributes:
        max_json_bytes: size cap of ``policy.json`` (bytes on disk).
        max_json_depth: deepest nesting of lists and objects in ``policy.json``.
        max_array_bytes: cap of one array's size as its ``.npy`` header declares it (shape × item size), checked
            before it is decompressed.
        max_total_bytes: cap of the declared sizes of all arrays plus the state the config's width implies:
            ``len(models) · (n_features + 1)² · 8`` bytes (one float64 (d+1)² matrix per model, the largest state a
            registered policy derives from its width alone).
        max_arrays: most arrays ``arrays.npz`` may hold.
    """

    max_json_bytes: int = 16 << 20
    max_json_depth: int = 64
    max_array_bytes: int = 2 << 30
    max_total_bytes: int = 4 << 30
    max_arrays: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_json_bytes", "max_json_depth", "max_array_bytes", "max_total_bytes", "max_arrays"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"PolicyLimits.{name} must be an integer ≥ 1, got {value!r}")


DEFAULT_LIMITS = PolicyLimits()


@dataclass(frozen=True)
class ArrayInfo:
    """An array of ``arrays.npz`` as its ``.npy`` header declares it (nothing decompressed)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    nbytes: int


def read_policy_dir(
    path: str | Path, expect: type | None = None, *, limits: PolicyLimits = DEFAULT_LIMITS
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read ``(kind, config, arrays)`` written by :func:`write_policy_dir`, within ``limits``.

    With ``expect``, a directory holding another kind of policy is refused. Float arrays must be finite, except
    those ``expect`` names (or shell-style patterns) in a ``nonfinite_arrays`` class attribute (e.g. unobserved outcomes stored as NaN).

    Raises:
        PolicyFormatError: a file is missing, not UTF-8 JSON, too large or too deeply nested; an array needs
            pickle, declares more bytes than the limits allow or than its file holds, or holds NaN or ±inf; the
            config declares a negative width or one implying more state than ``limits.max_total_bytes``.
    """
    root = Path(path)
    kind, doc_path, doc = _read_doc(root, limits)
    if expect is not None and kind != _kind_name(expect):
        raise PolicyFormatError(f"{root} holds a {kind!r}, not a {_kind_name(expect)!r}")
    config = dict(doc["config"])
    arrays_path = root / ARRAYS_FILE
    declared = npz_members(arrays_path, limits) if arrays_path.is_file() else {}
    _check_declared_width(doc_path, config, sum(a.nbytes for a in declared.values()), limits)
    arrays: dict[str, np.ndarray] = {}
    if declared:
        try:
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise PolicyFormatError(f"{arrays_path} cannot be read: {exc}") from None
    allowed = frozenset(getattr(expect, "nonfinite_arrays", ()) or ())
    _check_finite(arrays_path, arrays, allowed)
    return kind, config, arrays


def _read_doc(root: Path, limits: PolicyLimits) -> tuple[str, Path, dict[str, Any]]:
    """``(kind, path, document)`` of the ``policy.json`` in ``root``, checked."""
    doc_path = root / POLICY_FILE
    if not doc_path.is_file():
        raise PolicyFormatError(f"{root} is not a saved policy: {POLICY_FILE} is missing")
    doc = _read_json(doc_path, limits)
    if not isinstance(doc, dict) or "kind" not in doc or "config" not in doc:
        raise PolicyFormatError(f"{doc_path} lacks 'kind' and 'config'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise PolicyFormatError(
            f"{doc_path} has format_version {doc.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    if not isinstance(doc["kind"], str):
        raise PolicyFormatError(f"{doc_path}: 'kind' must be a string, got {type(doc['kind']).__name__}")
    if not isinstance(doc["config"], dict):
        raise PolicyFormatError(f"{doc_path}: 'config' must be an object, got {type(doc['config']).__name__}")
    return _canonical_kind(doc["kind"]), doc_path, doc


def npz_members(path: str | Path, limits: PolicyLimits = DEFAULT_LIMITS) -> dict[str, ArrayInfo]:
    """The arrays of the ``.npz`` file ``path`` as their headers declare them, checked against ``limits``.

    Reads the zip directory and each member's ``.npy`` header only: nothing is decompressed beyond the headers, so
    a zip bomb or a header declaring 10¹⁵ elements is refused before any memory is allocated for it.

    Raises:
        PolicyFormatError: not a zip of ``.npy`` files; an array of objects (pickle); a declared size above the
            limits or different from what the member holds.
    """
    file = Path(path)
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PolicyFormatError(f"{file} is not a zip archive of arrays (.npz): {exc}") from None
    out: dict[str, ArrayInfo] = {}
    total = 0
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_arrays:
            raise PolicyFormatError(
                f"{file} holds {len(members)} members; at most {limits.max_arrays} are read"
            )
        for info in members:
            if not info.filename.endswith(".npy"):
                raise PolicyFormatError(f"{file}: member {info.filename!r} is not a .npy array")
            name = info.filename[: -len(".npy")]
            if name in out:
                raise PolicyFormatError(f"{file}: array {name!r} appears twice")
            try:
                with archive.open(info) as member:
                    shape, dtype, header_len = _npy_header(member)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
                raise PolicyFormatError(f"{file}: array {name!r} has an unreadable header: {exc}") from None
            if dtype.hasobject:
                raise PolicyFormatError(
                    f"{file}: array {name!r} holds Python objects, which would need pickle; refused"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > limits.max_array_bytes:
                raise PolicyFormatError(
                    f"{file}: array {name!r} declares shape {shape} of {dtype} = {nbytes} bytes, above the "
                    f"{limits.max_array_bytes}-byte limit per array"
                )
            if header_len + nbytes != info.file_size:
                raise PolicyFormatError(
                    f"{file}: array {name!r} declares {nbytes} bytes of data, but its member holds "
                    f"{info.file_size - header_len}"
                )
            total += nbytes
            if total > limits.max_total_bytes:
                raise PolicyFormatError(
                    f"{file}: the arrays declare more than the {limits.max_total_bytes}-byte limit in total"
                )
            out[name] = ArrayInfo(name, tuple(shape), dtype, nbytes)
    return out


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """``(shape, dtype, header length in bytes)`` of the ``.npy`` stream ``member``."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"npy format version {version} is not read in policy files")
    return tuple(int(n) for n in shape), np.dtype(dtype), member.tell()


def _read_json(doc_path: Path, limits: PolicyLimits) -> Any:
    size = doc_path.stat().st_size
    if size > limits.max_json_bytes:
        raise PolicyFormatError(f"{doc_path} has {size} bytes, above the {limits.max_json_bytes}-byte limit")
    try:
        doc = json.loads(doc_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyFormatError(f"{doc_path} is not UTF-8 JSON text (a binary file?)") from None
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"{doc_path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise PolicyFormatError(f"{doc_path} nests deeper than {limits.max_json_depth} levels") from None
    _check_depth(doc_path, doc, limits.max_json_depth)
    return doc


def _check_depth(doc_path: Path, doc: Any, max_depth: int) -> None:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise PolicyFormatError(f"{doc_path} nests deeper than {max_depth} levels")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _check_declared_width(
    doc_path: Path, config: Mapping[str, Any], arrays_bytes: int, limits: PolicyLimits
) -> None:
    """Refuse a ``n_features`` or ``models`` entry that is malformed or implies more state than the limits."""
    width = config.get("n_features")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 0):
        raise PolicyFormatError(f"{doc_path}: n_features must be null or an integer ≥ 0, got {width!r}")
    models = config.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise PolicyFormatError(
                f"{doc_path}: models must be a list of non-empty names, got {models!r:.200}"
            )
        if len(set(models)) != len(models):
            raise PolicyFormatError(f"{doc_path}: models must be unique, got {models!r:.200}")
    if width is None:
        return
    implied = max(len(models or ()), 1) * (width + 1) ** 2 * 8
    if arrays_bytes + implied > limits.max_total_bytes:
        raise PolicyFormatError(
            f"{doc_path}: n_features={width} over {max(len(models or ()), 1)} models implies {implied} bytes of "
            f"state, above the {limits.max_total_bytes}-byte limit"
        )


def _check_finite(arrays_path: Path, arrays: Mapping[str, np.ndarray], allowed: Collection[str]) -> None:
    """Refuse NaN or ±inf in any array but those ``allowed`` names (shell-style patterns, e.g. ``"tau_*"``)."""
    for name, a in arrays.items():
        if a.dtype.kind not in "fc" or any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
            continue
        if not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise PolicyFormatError(f"{arrays_path}: array {name!r} holds {bad} NaN or infinite values")


def load_policy(path: str | Path) -> Any:
    """Load any registered policy saved with its ``save(path)`` method.

    The class is the one registered (:func:`register_policy`) under the ``kind`` recorded in ``policy.json``, or
    declared under that name in the :data:`ENTRY_POINT_GROUP` entry points of an installed package. The file never
    names a module to import, and nothing is unpickled.

    Raises:
        PolicyFormatError: the directory is not a valid saved policy (including any error its class's loader
            raises on the files' content).
    """
    kind, _, _ = _read_doc(Path(path), DEFAULT_LIMITS)
    cls = _lookup_kind(kind)
    if cls is None:
        raise PolicyFormatError(f"unknown policy kind {kind!r} in {path}; registered: {sorted(_REGISTRY)}")
    loader: Callable[[str | Path], Any] = cls.load  # type: ignore[attr-defined]
    try:
        return loader(path)
    except PolicyFormatError:
        raise
    except (RoutingEnvError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # The files passed the format checks but not the loader's own: still a bad file, not a crash.
        raise PolicyFormatError(f"{path} is not a valid {kind}: {type(exc).__name__}: {exc}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to policy.json")
