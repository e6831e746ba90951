"""Logged query × model outcomes: the canonical schema, `LoggedDataset`, loaders and the synthetic generator."""

from routing_env.data.dataset import LoggedDataset, MissingOutcomes, oracle_from_arrays
from routing_env.data.featurizers import (
    FeaturizedSplit,
    Featurizer,
    QueryFeaturizer,
    SentenceEmbeddingFeaturizer,
    TaskOneHot,
    TextFeaturizer,
    featurize,
    load_featurizer,
    split_and_featurize,
)
from routing_env.data.loaders import (
    DATASET_NAMES,
    estimate_tokens,
    load_dataset,
    load_llmrouter,
    load_open_bandit,
    load_routellm,
    load_routerarena,
    load_routerbench,
)
from routing_env.data.residual import TextResidualFeaturizer, stack_text_residual
from routing_env.data.sample import SAMPLE_CONFIG, load_sample, write_sample
from routing_env.data.schema import ModelCard
from routing_env.data.synthetic import DEFAULT_MODELS, SyntheticModel, make_synthetic

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_MODELS",
    "SAMPLE_CONFIG",
    "FeaturizedSplit",
    "Featurizer",
    "LoggedDataset",
    "MissingOutcomes",
    "ModelCard",
    "QueryFeaturizer",
    "SentenceEmbeddingFeaturizer",
    "SyntheticModel",
    "TaskOneHot",
    "TextFeaturizer",
    "TextResidualFeaturizer",
    "estimate_tokens",
    "featurize",
    "load_dataset",
    "load_featurizer",
    "load_llmrouter",
    "load_open_bandit",
    "load_routellm",
    "load_routerarena",
    "load_routerbench",
    "load_sample",
    "make_synthetic",
    "oracle_from_arrays",
    "split_and_featurize",
    "stack_text_residual",
    "write_sample",
]
