"""Settings of a frontier or cascade study (:class:`CompareConfig`), the router families it runs, and the
train/test split with features that every router is fitted and scored on (:func:`prepare_splits`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from routing_env.data import LoggedDataset, QueryFeaturizer, SentenceEmbeddingFeaturizer, split_and_featurize
from routing_env.data.featurizers import DEFAULT_EMBEDDING_MODEL
from routing_env.errors import ConfigurationError, PartialInformationError

__all__ = [
    "BANDITS",
    "DEFAULT_COST_WEIGHTS",
    "FEATURIZERS",
    "LEARNED",
    "ROUTERS",
    "CompareConfig",
    "prepare_splits",
    "scaled_config",
]

#: λ grid: dense where routing pays off on typical price ratios (the curves between grid points are only
#: interpolated), then out to "cost dominates".
DEFAULT_COST_WEIGHTS: tuple[float, ...] = (
    *(0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2),
    *(0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
ROUTERS: tuple[str, ...] = (
    "random",
    "best-single",
    "task-table",
    "cluster",
    "knn",
    "mlp",
    "logistic",
    "matrix-factorization",
    "linucb",
    "thompson",
    "epsilon-greedy",
    "softmax",
    "select-router",
    "ppo",
    "ppo-conditioned",
)
BANDITS: tuple[str, ...] = ("linucb", "thompson", "epsilon-greedy", "softmax")
#: Featurizers :func:`prepare_splits` can fit on the training prompts (see :attr:`CompareConfig.featurizer`).
FEATURIZERS: tuple[str, ...] = ("text", "embeddings")
#: Routers that learn from the query features (the others are fixed rules).
LEARNED: tuple[str, ...] = tuple(r for r in ROUTERS if r not in ("random", "best-single"))
#: Strong-model call shares the MF router's threshold is calibrated to.


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a frontier study.

    Attributes:
        cost_weights: the λ grid every router is scored on.
        routers: router families to run (names from :data:`ROUTERS`).
        test_size: held-out share of the queries (split by prompt when the data has prompts).
        seed: seeds the split, the featurizer and every router.
        ppo_timesteps: environment steps per per-λ PPO policy.
        ppo_cost_weights: the λ values a per-λ PPO policy is trained for (default: the whole grid).
        ppo_conditioned_timesteps: environment steps of the λ-conditioned PPO policy.
        ppo_conditioned_range: λ range of the conditioned policy, which is scored only inside it (default: the
            grid's range; λ is drawn log-uniformly and seen on a log scale, so each decade of λ gets its share).
        n_envs: parallel copies in PPO's vector env.
        ppo_warm_start: PPO starts from the supervised warm start on the training split (``train_ppo``'s default);
            ``False`` trains PPO from a random initialisation (for ablations).
        quality_target: share of the strongest model's quality the "cost saved" column aims at.
        featurize: ``"auto"`` fits the default text featurizer (TF-IDF + SVD, plus the task one-hot) on the
            training prompts when the data has prompts but no features; ``"always"`` also replaces existing
            features; ``"never"`` keeps the features as they are.
        bandit_alpha: LinUCB's confidence width.
        featurizer: what features are derived from the prompts: ``"text"`` (TF-IDF + SVD, scikit-learn only) or
            ``"embeddings"`` (all-MiniLM-L6-v2 sentence embeddings scaled to unit mean-square coordinates; needs
            ``pip install 'routing-env[embeddings]'``); both followed by the task one-hot when tasks are known.
    """

    cost_weights: tuple[float, ...] = DEFAULT_COST_WEIGHTS
    routers: tuple[str, ...] = ROUTERS
    test_size: float = 0.25
    seed: int = 0
    ppo_timesteps: int = 60_000
    ppo_cost_weights: tuple[float, ...] | None = None
    ppo_conditioned_timesteps: int = 200_000
    ppo_conditioned_range: tuple[float, float] | None = None
    n_envs: int = 8
    ppo_warm_start: bool = True
    quality_target: float = 0.95
    featurize: Literal["auto", "always", "never"] = "auto"
    bandit_alpha: float = 0.1
    featurizer: Literal["text", "embeddings"] = "text"

    def __post_init__(self) -> None:
        weights = tuple(float(w) for w in self.cost_weights)
        if not weights or any(not np.isfinite(w) or w < 0 for w in weights):
            raise ConfigurationError(f"cost_weights must be finite numbers ≥ 0, got {self.cost_weights!r}")
        object.__setattr__(self, "cost_weights", tuple(sorted(set(weights))))
        unknown = [r for r in self.routers if r not in ROUTERS]
        if unknown or not self.routers:
            raise ConfigurationError(f"routers must be names from {list(ROUTERS)}, got {list(self.routers)}")
        if not 0.0 < float(self.test_size) < 1.0:
            raise ConfigurationError(f"test_size must be in (0, 1), got {self.test_size!r}")
        for name in ("ppo_timesteps", "ppo_conditioned_timesteps", "n_envs"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 < float(self.quality_target) <= 1.0:
            raise ConfigurationError(f"quality_target must be in (0, 1], got {self.quality_target!r}")
        if self.featurize not in ("auto", "always", "never"):
            raise ConfigurationError(f"featurize must be 'auto', 'always' or 'never', got {self.featurize!r}")
        if self.featurizer not in FEATURIZERS:
            raise ConfigurationError(
                f"featurizer must be one of {list(FEATURIZERS)}, got {self.featurizer!r}"
            )
        if self.ppo_cost_weights is not None:
            object.__setattr__(self, "ppo_cost_weights", tuple(float(w) for w in self.ppo_cost_weights))


def prepare_splits(dataset: LoggedDataset, config: CompareConfig) -> tuple[LoggedDataset, LoggedDataset, str]:
    """Split ``dataset`` into train/test and give both features (see :attr:`CompareConfig.featurize`).

    Returns ``(train, test, description of the features)``.
    """
    if not dataset.is_full_information:
        raise PartialInformationError(
            "the frontier study scores every router exactly and needs every model's outcome on every query"
        )
    refit = config.featurize == "always" or (config.featurize == "auto" and dataset.n_features == 0)
    if not refit and config.featurizer != "text":
        raise ConfigurationError(
            f"featurizer={config.featurizer!r} applies only when features are derived from the prompts, but "
            f"featurize={config.featurize!r} keeps the dataset's own {dataset.n_features} features; "
            "use featurize='always' to replace them"
        )
    if refit:
        if dataset.prompts is None:
            raise ConfigurationError(
                "the dataset has no features and no prompts to derive them from; give it features "
                "(LoggedDataset.with_features) or prompts"
            )
        if config.featurizer == "embeddings":
            # Unit-variance scaling puts the embeddings on the scale of the standardised text features.
            featurizer: QueryFeaturizer | None = QueryFeaturizer(
                SentenceEmbeddingFeaturizer(unit_variance=True)
            )
            kind = f"{DEFAULT_EMBEDDING_MODEL} sentence embeddings"
        else:
            featurizer, kind = None, "text featurizer fitted on the training prompts"
        split = split_and_featurize(
            dataset, test_size=config.test_size, seed=config.seed, featurizer=featurizer
        )
        what = f"{kind} ({split.train.n_features} dims, incl. the prompt's length"
        what += " and task one-hot)" if dataset.tasks is not None else ")"
        return split.train, split.test, what
    if dataset.n_features == 0:
        raise ConfigurationError("the dataset has no features and featurize='never'")
    train, test = dataset.split(test_size=config.test_size, seed=config.seed)
    return train, test, f"the dataset's own {dataset.n_features} features"


def scaled_config(config: CompareConfig, factor: float) -> CompareConfig:
    """``config`` with PPO's timesteps multiplied by ``factor`` (for quick runs and smoke tests)."""
    return replace(
        config,
        ppo_timesteps=max(int(config.ppo_timesteps * factor), 256),
        ppo_conditioned_timesteps=max(int(config.ppo_conditioned_timesteps * factor), 256),
    )
