"""Logged query × model outcomes: the canonical schema, `LoggedDataset`, loaders and the synthetic generator."""

from routing_env.data.dataset import LoggedDataset, oracle_from_arrays
from routing_env.data.sample import SAMPLE_CONFIG, load_sample, write_sample
from routing_env.data.schema import ModelCard
from routing_env.data.synthetic import DEFAULT_MODELS, SyntheticModel, make_synthetic

__all__ = [
    "DEFAULT_MODELS",
    "SAMPLE_CONFIG",
    "LoggedDataset",
    "ModelCard",
    "SyntheticModel",
    "load_sample",
    "make_synthetic",
    "oracle_from_arrays",
    "write_sample",
]
