"""Column names of the canonical long format and per-model price cards.

The canonical format has one row per query × model outcome (see ``logged_data/README.md``):

=================  ==========  =========================================================================
column             required    meaning
=================  ==========  =========================================================================
``query_id``       yes         groups the rows of one query (str)
``model``          yes         the LLM that answered (str)
``quality``        yes         float in [0, 1]; NaN = not observed
``cost``           yes*        USD ≥ 0 for that call (*or ``input_tokens`` + ``output_tokens`` + price cards)
``input_tokens``   no          int ≥ 0
``output_tokens``  no          int ≥ 0
``latency_s``      no          seconds ≥ 0
``signal``         no          what a router sees after the call and before the quality (confidence...)
``prompt``         no          per query
``task``           no          per query
``x_0 … x_{d-1}``  no          per-query precomputed features
``logged``         no          bool: the arm the logging policy chose (bandit logs)
``propensity``     no          float in (0, 1]: the logging probability of that arm
=================  ==========  =========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from routing_env.errors import PriceError

QUERY_ID = "query_id"
MODEL = "model"
QUALITY = "quality"
COST = "cost"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
LATENCY = "latency_s"
SIGNAL = "signal"
PROMPT = "prompt"
TASK = "task"
LOGGED = "logged"
PROPENSITY = "propensity"

REQUIRED_COLUMNS = (QUERY_ID, MODEL, QUALITY)
PER_ROW_COLUMNS = (QUALITY, COST, INPUT_TOKENS, OUTPUT_TOKENS, LATENCY, SIGNAL, LOGGED, PROPENSITY)
PER_QUERY_COLUMNS = (PROMPT, TASK)
FEATURE_PATTERN = re.compile(r"^x_(\d+)$")

TOKENS_PER_MILLION = 1_000_000.0


def is_missing(value: object) -> bool:
    """``None``, ``pd.NA`` or a float NaN: a cell with no value."""
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def feature_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The ``x_<i>`` columns of a frame, ordered by ``i``."""
    found = [(int(m.group(1)), c) for c in columns if (m := FEATURE_PATTERN.match(str(c)))]
    return [c for _, c in sorted(found)]


def feature_names(d: int) -> tuple[str, ...]:
    """Canonical feature column names ``x_0 … x_{d-1}``."""
    return tuple(f"x_{i}" for i in range(d))


@dataclass(frozen=True)
class ModelCard:
    """Public list price of one model.

    Args:
        name: model name as it appears in the ``model`` column.
        input_price: USD per 1M input (prompt) tokens, ≥ 0.
        output_price: USD per 1M output (completion) tokens, ≥ 0.
        description: free text (provider, size...), kept for reports.
    """

    name: str
    input_price: float
    output_price: float
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("input_price", "output_price"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise PriceError(
                    f"ModelCard({self.name!r}).{field} must be a finite number of USD per 1M tokens ≥ 0, "
                    f"got {value!r}"
                )

    def cost(self, input_tokens: np.ndarray | float, output_tokens: np.ndarray | float) -> np.ndarray:
        """USD cost of calls with the given token counts (arrays broadcast)."""
        inp = np.asarray(input_tokens, dtype=np.float64)
        out = np.asarray(output_tokens, dtype=np.float64)
        return (inp * self.input_price + out * self.output_price) / TOKENS_PER_MILLION

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_price": float(self.input_price),
            "output_price": float(self.output_price),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelCard:
        try:
            return cls(
                name=str(data["name"]),
                input_price=float(data["input_price"]),  # type: ignore[arg-type]
                output_price=float(data["output_price"]),  # type: ignore[arg-type]
                description=str(data.get("description", "")),
            )
        except KeyError as exc:
            raise PriceError(f"price card {dict(data)!r} lacks the key {exc.args[0]!r}") from None


def as_model_cards(
    cards: Mapping[str, ModelCard] | Mapping[str, Mapping[str, float]] | list[ModelCard] | None,
) -> dict[str, ModelCard]:
    """Normalise a price table given as cards, a list of cards, or ``{model: {input_price, output_price}}``."""
    if cards is None:
        return {}
    if isinstance(cards, list):
        return {c.name: c for c in cards}
    out: dict[str, ModelCard] = {}
    for name, card in cards.items():
        if isinstance(card, ModelCard):
            out[str(name)] = card
        else:
            out[str(name)] = ModelCard.from_dict({"name": name, **card})
    return out
