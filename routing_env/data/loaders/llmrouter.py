"""LLMRouter's routing data (ulab-uiuc/LLMRouter, the GraphRouter/RouterDC files): 9 open models, scores in
[0, 1], list prices per model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.dataset import LoggedDataset
from routing_env.data.files import read_jsonl_records
from routing_env.data.loaders._inputs import check_choice, read_json, require_dir
from routing_env.data.loaders._prices import cards_from_prices, estimate_tokens, input_tokens_note
from routing_env.data.loaders._warnings import announce
from routing_env.data.schema import ModelCard
from routing_env.errors import ConfigurationError, SchemaError

__all__ = ["LLMROUTER_OUTPUT_TOKENS", "load_llmrouter"]

#: Assumed answer length (tokens) per LLMRouter task, used to estimate the cost of a call: short for multiple
#: choice and closed QA, longer for chain-of-thought math and code. Unknown tasks use ``_DEFAULT_OUTPUT_TOKENS``.
LLMROUTER_OUTPUT_TOKENS: dict[str, int] = {
    "mmlu": 16,
    "gpqa": 16,
    "commonsense_qa": 16,
    "openbook_qa": 16,
    "arc_challenge": 16,
    "natural_qa": 32,
    "trivia_qa": 32,
    "commongen": 64,
    "agentverse-logicgrid": 128,
    "gsm8k": 256,
    "agentverse-mgsm": 256,
    "math": 384,
    "mbpp": 256,
    "human_eval": 256,
}
_DEFAULT_OUTPUT_TOKENS = 128
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Chosen:
    """The questions of one split: ``(source split, position in that file, item)`` and the overlap note."""

    items: list[tuple[str, int, dict[str, Any]]]
    overlap: int
    overlap_note: str


def load_llmrouter(
    dir: str | Path,
    split: Literal["train", "test", "all"] = "train",
    *,
    output_tokens: Mapping[str, int] | None = None,
) -> LoggedDataset:
    """Load the LLMRouter (GraphRouter/RouterDC) routing data: 9 open models, scores in [0, 1].

    Reads ``dcrouter_{train,test}.json`` (``question``, ``scores`` per model), ``query_meta_{train,test}.jsonl``
    (``task_name`` per ``query``) and ``llm_candidates.json`` (USD per 1M input/output tokens per model).

    - Tasks are joined on the question text: the split's own metadata file first, then the other one. A few
      questions are listed under two tasks; the first listing wins and the count goes to ``meta``.
    - 119 questions occur in both the train and the test file (with different scores for some). They are
      reported with a :class:`~routing_env.errors.DataWarning` and in ``meta["train_test_overlap"]``:
      ``split="test"`` drops them from the test queries so that the test split stays held out; ``split="all"``
      keeps one copy, the train one. ``split="train"`` keeps every train question (``meta`` notes the overlap).
    - The files have no cost: cost is **estimated** as ``estimate_tokens(question)`` input tokens plus a per-task
      answer length (:data:`LLMROUTER_OUTPUT_TOKENS`, overridable with ``output_tokens``) output tokens, priced
      with ``llm_candidates.json``. ``meta["cost"]`` says so.

    Args:
        dir: folder holding the LLMRouter files.
        split: ``"train"`` (5,608 questions), ``"test"`` (500 minus the overlap) or ``"all"`` (deduplicated).
        output_tokens: assumed answer length per task (tokens), overriding entries of the default table.

    Returns:
        A full-information dataset over the 9 scored models, with prompts, tasks and estimated USD costs.
        The models are in the order ``llm_candidates.json`` lists them, whatever the split, so a router fitted on
        one split scores another. Query ids are ``"train/<i>"`` / ``"test/<i>"`` (position in the source file).
    """
    check_choice("split", split, (*_SPLITS, "all"))
    root = require_dir(dir, "load_llmrouter(dir)")
    lengths = {**LLMROUTER_OUTPUT_TOKENS, **dict(output_tokens or {})}
    for name, value in lengths.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigurationError(f"output_tokens[{name!r}] must be an int ≥ 0, got {value!r}")
    chosen = _choose(_read_items(root, "train"), _read_items(root, "test"), split)
    if chosen.overlap and split != "train":
        announce(f"load_llmrouter(split={split!r})", chosen.overlap_note)
    tables = {which: _task_table(root, which) for which in _SPLITS}
    models, cards = _models_and_cards(root, chosen)
    qids, prompts, tasks = [], [], []
    for which, i, x in chosen.items:
        q = str(x["question"])
        other = "test" if which == "train" else "train"
        qids.append(f"{which}/{i}")
        prompts.append(q)
        tasks.append(tables[which][0].get(q, tables[other][0].get(q)))
    out_tok = np.array(
        [float(lengths.get(t, _DEFAULT_OUTPUT_TOKENS)) if t else _DEFAULT_OUTPUT_TOKENS for t in tasks]
    )
    quality = _score_matrix(chosen, models)
    n, k = quality.shape
    frame = pd.DataFrame(
        {
            S.QUERY_ID: np.repeat(np.asarray(qids, dtype=object), k),
            S.MODEL: np.tile(np.asarray(models, dtype=object), n),
            S.QUALITY: quality.ravel(),
            S.INPUT_TOKENS: np.repeat(estimate_tokens(prompts), k),
            S.OUTPUT_TOKENS: np.repeat(out_tok, k),
            S.PROMPT: np.repeat(np.asarray(prompts, dtype=object), k),
            S.TASK: np.repeat(np.asarray(tasks, dtype=object), k),
        }
    )
    # A model without a score on a query was not run on it: no row rather than a NaN outcome.
    frame = frame[~np.isnan(quality.ravel())]
    n_ambiguous = tables["train"][1] + tables["test"][1]
    n_no_task = sum(t is None for t in tasks)
    meta = {
        "source": f"LLMRouter dcrouter {split}",
        "train_test_overlap": chosen.overlap_note,
        "tasks": f"joined on question text from query_meta_*.jsonl; {n_ambiguous} questions listed under two "
        f"tasks (first listing kept); {n_no_task} without a task",
        "cost": (
            f"estimated: {input_tokens_note('question')}, output_tokens = a per-task answer-length assumption "
            f"({_DEFAULT_OUTPUT_TOKENS} for unknown tasks), priced with llm_candidates.json (USD per 1M tokens); "
            "not logged costs"
        ),
        "quality": "LLMRouter score in [0, 1] (accuracy, F1 or partial credit by task)",
    }
    return LoggedDataset.from_frame(frame, model_cards=cards, models=models, meta=meta)


def _read_items(root: Path, which: str) -> list[dict[str, Any]]:
    """The question records of ``dcrouter_<which>.json``."""
    path = root / f"dcrouter_{which}.json"
    if not path.exists():
        raise FileNotFoundError(f"load_llmrouter: {path} not found")
    data = read_json(path)
    if not isinstance(data, list) or (data and not {"question", "scores"} <= set(data[0])):
        raise SchemaError(f"{path}: expected a JSON list of objects with 'question' and 'scores'")
    return data


def _task_table(root: Path, which: str) -> tuple[dict[str, str], int]:
    """``({question: task}, number of questions listed under two tasks)`` of ``query_meta_<which>.jsonl``."""
    path = root / f"query_meta_{which}.jsonl"
    table: dict[str, str] = {}
    ambiguous: set[str] = set()
    if not path.exists():
        return table, 0
    for r in read_jsonl_records(path):
        q, t = str(r.get("query", "")), r.get("task_name")
        if t is None:
            continue
        if q in table and table[q] != t:
            ambiguous.add(q)
        table.setdefault(q, str(t))
    return table, len(ambiguous)


def _choose(train: list[dict[str, Any]], test: list[dict[str, Any]], split: str) -> _Chosen:
    """The questions ``split`` keeps: test questions that also occur in train never count as held out."""
    train_q = {str(x["question"]) for x in train}
    overlap = [x for x in test if str(x["question"]) in train_q]
    train_scores = {str(x["question"]): x["scores"] for x in train}
    differ = sum(train_scores[str(x["question"])] != x["scores"] for x in overlap)
    held_out = [("test", i, x) for i, x in enumerate(test) if str(x["question"]) not in train_q]
    every_train = [("train", i, x) for i, x in enumerate(train)]
    items = {"train": every_train, "test": held_out, "all": every_train + held_out}[split]
    note = (
        f"{len(overlap)} questions occur in both dcrouter_train.json and dcrouter_test.json "
        f"({differ} with different scores); "
        + {
            "train": "all kept in split='train'",
            "test": "dropped from split='test' so that it stays held out",
            "all": "kept once, with the train scores",
        }[split]
    )
    return _Chosen(items, len(overlap), note)


def _models_and_cards(root: Path, chosen: _Chosen) -> tuple[list[str], dict[str, ModelCard]]:
    """The scored models in the order ``llm_candidates.json`` lists them (the same for every split), and their
    price cards; every scored model needs a price."""
    cpath = root / "llm_candidates.json"
    if not cpath.exists():
        raise FileNotFoundError(f"load_llmrouter: {cpath} not found (the per-model prices)")
    candidates = read_json(cpath)
    scored: list[str] = []
    for _, _, x in chosen.items:
        scored += [str(m) for m in x["scores"] if str(m) not in scored]
    missing_price = [m for m in scored if m not in candidates]
    if missing_price:
        raise SchemaError(f"{cpath}: no price for the scored models {missing_price}")
    models = [str(m) for m in candidates if str(m) in set(scored)]
    return models, cards_from_prices(
        candidates, models, "input_price", "output_price", description_key="feature"
    )


def _score_matrix(chosen: _Chosen, models: list[str]) -> np.ndarray:
    """``(n, K) float64`` scores of the chosen questions, NaN where a model has no (or a null) score."""
    quality = np.full((len(chosen.items), len(models)), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for r, (_, _, x) in enumerate(chosen.items):
        for m, s in x["scores"].items():
            quality[r, col[str(m)]] = np.nan if s is None else float(s)
    return quality
