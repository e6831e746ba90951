"""The bundled sample logs: a fixed call of the synthetic generator.

``logged_data/sample/`` in the repository holds these logs as a file; :func:`load_sample` regenerates the same
dataset from the generator, so an installed package needs no data files.
"""

from __future__ import annotations

from pathlib import Path

from routing_env.data.dataset import LoggedDataset
from routing_env.data.synthetic import make_synthetic

#: Arguments of :func:`make_synthetic` that produce the bundled sample.
SAMPLE_CONFIG: dict[str, int | float] = {"n_queries": 4000, "n_features": 16, "seed": 20261129}
SAMPLE_FILE = "sample.parquet"


def load_sample() -> LoggedDataset:
    """The bundled sample: 4,000 synthetic queries × 7 models with prompts, tasks, tokens, latency and signal."""
    return make_synthetic(**SAMPLE_CONFIG)  # type: ignore[arg-type]


def write_sample(directory: str | Path) -> Path:
    """Write the bundled sample to ``directory/sample.parquet`` and return the path."""
    return load_sample().save(Path(directory) / SAMPLE_FILE)
