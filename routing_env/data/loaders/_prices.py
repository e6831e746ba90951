"""Price cards and token-based costs shared by the loaders of logs that carry no USD cost.

Most public routing logs give a quality per query and model but no cost. The loaders then estimate token counts
from the text (:func:`estimate_tokens`) and price them with per-model list prices in USD per 1M tokens
(:class:`~routing_env.data.schema.ModelCard`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from routing_env.data.schema import ModelCard

#: Characters per token used to estimate token counts from text: the usual rule of thumb for English text and
#: BPE tokenizers (GPT-4's cl100k averages about 4 characters per token on English prose).
CHARS_PER_TOKEN = 4.0


def estimate_tokens(texts: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """``(n,) float64`` token counts estimated from text: ``ceil(characters / CHARS_PER_TOKEN)``, at least 1.

    An estimate for logs that carry text but no token counts; it is documented in ``meta`` wherever used.
    """
    lengths = pd.Series(texts, dtype=object).fillna("").astype(str).str.len().to_numpy(dtype=np.float64)
    return np.maximum(1.0, np.ceil(lengths / CHARS_PER_TOKEN))


def input_tokens_note(text: str) -> str:
    """How :func:`estimate_tokens` counted the input tokens of ``text`` (the prompt, the question...)."""
    return f"input_tokens = ceil(characters / {CHARS_PER_TOKEN:g}) of the {text}"


def cards_from_prices(
    prices: Mapping[str, Mapping[str, Any]],
    models: Sequence[str],
    input_key: str,
    output_key: str,
    description_key: str | None = None,
) -> dict[str, ModelCard]:
    """Price cards of the ``models`` that ``prices`` lists (others are left out).

    Args:
        prices: a source's price table, ``{model: {input_key: USD per 1M, output_key: USD per 1M, …}}``.
        models: the models to price, in the order of the returned mapping.
        input_key, output_key: the keys of the input and output prices (USD per 1M tokens).
        description_key: the key of a free-text description, if the table has one.
    """
    cards = {}
    for m in models:
        if m not in prices:
            continue
        p = prices[m]
        description = str(p.get(description_key, "")) if description_key else ""
        cards[str(m)] = ModelCard(str(m), float(p[input_key]), float(p[output_key]), description)
    return cards


def token_costs(
    cards: Mapping[str, ModelCard], models: Sequence[str], input_tokens: np.ndarray, output_tokens: np.ndarray
) -> np.ndarray:
    """``(n, K) float64`` USD cost of calls with ``input_tokens`` and ``output_tokens (n, K)``, priced per model."""
    return np.column_stack(
        [cards[m].cost(input_tokens[:, j], output_tokens[:, j]) for j, m in enumerate(models)]
    )
