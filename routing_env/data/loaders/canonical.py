"""`load_dataset`: any supported source by name, the bundled sample, or a canonical file by path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from routing_env.data.dataset import LoggedDataset
from routing_env.data.files import SUFFIXES
from routing_env.data.loaders.llmrouter import load_llmrouter
from routing_env.data.loaders.open_bandit import load_open_bandit
from routing_env.data.loaders.routellm import load_routellm
from routing_env.data.loaders.routerarena import load_routerarena
from routing_env.errors import ConfigurationError

__all__ = ["DATASETS_ENV", "DATASET_NAMES", "load_dataset"]

#: Names accepted by :func:`load_dataset`, with the folder (under ``root``) each one reads.
DATASET_NAMES: dict[str, str] = {
    "sample": "",
    "routellm-mmlu": "routellm",
    "routellm-gsm8k": "routellm",
    "routellm-mt_bench": "routellm",
    "llmrouter": "llmrouter",
    "routerarena": "routerarena",
    "open-bandit-random": "obd-small",
    "open-bandit-bts": "obd-small",
}

#: Environment variable naming the folder that holds the third-party dataset folders (``root`` of load_dataset).
DATASETS_ENV = "ROUTING_ENV_DATASETS"


def load_dataset(name_or_path: str | Path, root: str | Path | None = None, **kwargs: Any) -> LoggedDataset:
    """Load a dataset by name, or a canonical ``.parquet``/``.csv``/``.jsonl`` file by path.

    Names (see :data:`DATASET_NAMES`): ``sample`` (the bundled synthetic sample), ``routellm-mmlu``,
    ``routellm-gsm8k``, ``routellm-mt_bench``, ``llmrouter``, ``routerarena``, ``open-bandit-random``,
    ``open-bandit-bts``. Third-party names read ``<root>/<folder>`` (``routellm``, ``llmrouter``,
    ``routerarena``, ``obd-small``); ``root`` defaults to the ``ROUTING_ENV_DATASETS`` environment variable.
    Extra keyword arguments go to the loader (e.g. ``split="test"`` for ``llmrouter``).
    """
    name = str(name_or_path)
    if name == "sample":
        from routing_env.data.sample import load_sample

        if kwargs:
            raise ConfigurationError(f"load_dataset('sample') takes no loader options, got {sorted(kwargs)}")
        return load_sample()
    if name in DATASET_NAMES:
        base = root if root is not None else os.environ.get(DATASETS_ENV)
        if base is None:
            raise ConfigurationError(
                f"load_dataset({name!r}) needs root= (the folder holding {DATASET_NAMES[name]!r}) "
                f"or the {DATASETS_ENV} environment variable"
            )
        folder = Path(base) / DATASET_NAMES[name]
        if name.startswith("routellm-"):
            return load_routellm(folder, task=name.removeprefix("routellm-"), **kwargs)  # type: ignore[arg-type]
        if name == "llmrouter":
            return load_llmrouter(folder, **kwargs)
        if name == "routerarena":
            return load_routerarena(folder, **kwargs)
        return load_open_bandit(folder, policy=name.removeprefix("open-bandit-"), **kwargs)  # type: ignore[arg-type]
    path = Path(name)
    if path.suffix.lower() in SUFFIXES:
        return LoggedDataset.read(path, **kwargs)
    raise ConfigurationError(
        f"load_dataset: {name!r} is neither a dataset name {sorted(DATASET_NAMES)} nor a .parquet/.csv/.jsonl path"
    )
