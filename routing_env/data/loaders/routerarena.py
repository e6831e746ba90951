"""RouterArena's cached per-model results (RouteWorks/RouterArena ``cached_results/``): real USD cost and token
counts per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.dataset import LoggedDataset, Normalize
from routing_env.data.files import read_jsonl_records
from routing_env.data.loaders._inputs import check_choice, read_json, require_dir
from routing_env.data.loaders._prices import cards_from_prices
from routing_env.data.loaders._warnings import announce
from routing_env.errors import SchemaError

__all__ = ["load_routerarena"]


def load_routerarena(
    dir: str | Path,
    *,
    normalize: Normalize | None = "clip",
    task_level: Literal["dataset", "subcategory"] = "dataset",
) -> LoggedDataset:
    """Load RouterArena's cached per-model results: real USD cost and token counts per call.

    Every ``*.jsonl`` file of ``dir`` holds one model's answers (``global_index``, ``question``,
    ``llm_selected``, ``token_usage``, ``evaluation_result.score`` / ``.inference_cost``). Queries are joined on
    ``global_index``; the models are in the files' name order; cost is the logged ``inference_cost`` (USD). When ``model_cost.json`` is present its prices
    become the model cards (USD per 1M tokens).

    Quality is ``evaluation_result.score``. METEOR scores of translation tasks can be slightly negative (down to
    about −0.03), outside the canonical [0, 1]. The default ``normalize="clip"`` sets them to 0 and says so: a
    :class:`~routing_env.errors.DataWarning` with the count, and ``meta["quality_normalization"]``.
    ``normalize=None`` refuses such scores with a :class:`~routing_env.errors.SchemaError`; ``"minmax"`` rescales
    every score by the observed range.

    Args:
        dir: folder with the per-model ``.jsonl`` files (and optionally ``model_cost.json``).
        normalize: ``"clip"`` (default), ``"minmax"`` or ``None`` (error on any score outside [0, 1]).
        task_level: ``"dataset"``: task = the benchmark family, the ``global_index`` text before the first
            ``_`` (``MMLUPro_law_17`` → ``MMLUPro``); ``"subcategory"``: everything before the trailing number
            (``MMLUPro_law``).
    """
    check_choice("normalize", normalize, ("clip", "minmax", None))
    check_choice("task_level", task_level, ("dataset", "subcategory"))
    root = require_dir(dir, "load_routerarena(dir)")
    files = sorted(p for p in root.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"load_routerarena: no per-model .jsonl files in {root}")
    frame = pd.DataFrame([row for path in files for row in _rows(path)])
    gid = frame[S.QUERY_ID]
    if task_level == "dataset":
        frame[S.TASK] = gid.str.split("_", n=1).str[0]
    else:
        frame[S.TASK] = gid.str.replace(r"_\d+$", "", regex=True)
    # The same question text is sent to every model; should a file differ, the first file's text is the query's.
    first_prompt = frame.groupby(S.QUERY_ID, sort=False)[S.PROMPT].transform("first")
    n_differ = int(frame.loc[frame[S.PROMPT] != first_prompt, S.QUERY_ID].nunique())
    frame[S.PROMPT] = first_prompt
    cost_path = root / "model_cost.json"
    cards = (
        cards_from_prices(
            read_json(cost_path),
            [str(m) for m in frame[S.MODEL].unique()],
            "input_token_price_per_million",
            "output_token_price_per_million",
        )
        if cost_path.exists()
        else {}
    )
    meta = {
        "source": f"RouterArena cached results ({', '.join(p.name for p in files)})",
        "cost": "logged inference_cost (USD) per call",
        "quality": "evaluation_result.score (accuracy, exact match, METEOR… by task)",
        "tasks": f"global_index prefix ({task_level})",
    }
    if n_differ:
        msg = (
            f"{n_differ} queries have a different question text in different files; the first file's is kept"
        )
        announce("load_routerarena", msg, meta, "prompts")
    return LoggedDataset.from_frame(frame, model_cards=cards, normalize=normalize, meta=meta)


def _rows(path: Path) -> list[dict[str, Any]]:
    """Canonical rows of one model's results file."""
    rows = []
    for lineno, r in enumerate(read_jsonl_records(path), 1):
        try:
            ev = r["evaluation_result"] or {}
            usage = r.get("token_usage") or {}
            rows.append(
                {
                    S.QUERY_ID: str(r["global_index"]),
                    S.MODEL: str(r.get("llm_selected") or path.stem),
                    S.QUALITY: np.nan if ev.get("score") is None else float(ev["score"]),
                    S.COST: np.nan if ev.get("inference_cost") is None else float(ev["inference_cost"]),
                    S.INPUT_TOKENS: usage.get("input_tokens", np.nan),
                    S.OUTPUT_TOKENS: usage.get("output_tokens", np.nan),
                    S.PROMPT: str(r.get("question", "")),
                }
            )
        except (KeyError, TypeError) as exc:
            raise SchemaError(
                f"{path}:{lineno}: RouterArena records need 'global_index' and 'evaluation_result' ({exc!r})"
            ) from None
    return rows
