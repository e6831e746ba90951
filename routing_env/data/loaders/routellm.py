"""RouteLLM's evaluation logs (lm-sys/RouteLLM ``routellm/evals``): MMLU, GSM8K and MT-Bench outcomes of
Mixtral-8x7B-Instruct (weak) and GPT-4-1106-preview (strong)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.dataset import LoggedDataset
from routing_env.data.files import read_jsonl_records
from routing_env.data.loaders._inputs import check_choice, first_existing, read_csv, require_dir
from routing_env.data.loaders._prices import estimate_tokens, input_tokens_note, token_costs
from routing_env.data.schema import ModelCard
from routing_env.errors import SchemaError

__all__ = ["ROUTELLM_MODEL_CARDS", "load_routellm"]

_MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
_GPT4 = "gpt-4-1106-preview"

#: Public list prices (USD per 1M tokens) of RouteLLM's two models: Mixtral-8x7B-Instruct as served by
#: Together/Anyscale-style endpoints, GPT-4-1106-preview as listed by OpenAI.
ROUTELLM_MODEL_CARDS: dict[str, ModelCard] = {
    _MIXTRAL: ModelCard(_MIXTRAL, 0.6, 0.6, "Mixtral-8x7B-Instruct-v0.1, public list price (weak model)"),
    _GPT4: ModelCard(_GPT4, 10.0, 30.0, "GPT-4-1106-preview, OpenAI list price (strong model)"),
}

_ROUTELLM_LAYOUT = {
    # task: (data candidates, contaminated-prompt candidates); the flat layout first, then RouteLLM's evals/ tree.
    "mmlu": (
        ("mmlu_responses", "mmlu/responses"),
        ("mmlu_contaminated_prompts.jsonl", "mmlu/contaminated_prompts.jsonl"),
    ),
    "gsm8k": (
        ("gsm8k_responses.csv", "gsm8k/gsm8k_responses.csv"),
        ("gsm8k_contaminated_prompts.jsonl", "gsm8k/contaminated_prompts.jsonl"),
    ),
    "mt_bench": (
        ("mt_bench_judgements.jsonl", "mt_bench/judgements.jsonl"),
        ("mt_bench_contaminated_prompts.jsonl", "mt_bench/contaminated_prompts.jsonl"),
    ),
}
#: Assumed answer length of an MMLU call: the prompt ends with "Answer:" and the answer is one option letter.
_MMLU_OUTPUT_TOKENS = 1
_MT_BENCH_FALLBACK_OUTPUT_TOKENS = 300


def load_routellm(
    dir: str | Path,
    task: Literal["mmlu", "gsm8k", "mt_bench"] = "mmlu",
    *,
    drop_contaminated: bool = True,
    model_cards: Mapping[str, ModelCard] | None = None,
    cost: Literal["tokens", "per_call"] = "tokens",
) -> LoggedDataset:
    """Load RouteLLM's evaluation logs: Mixtral-8x7B-Instruct (weak) vs GPT-4-1106-preview (strong).

    Reads either the flat layout (``mmlu_responses/mmlu_<subject>.csv``, ``gsm8k_responses.csv``,
    ``mt_bench_judgements.jsonl`` + ``mt_bench_questions.jsonl``, ``<task>_contaminated_prompts.jsonl``) or
    RouteLLM's own ``routellm/evals`` tree (``mmlu/responses/…``, ``gsm8k/gsm8k_responses.csv``,
    ``mt_bench/judgements.jsonl`` + ``mt_bench/question.jsonl``, ``<task>/contaminated_prompts.jsonl``).

    - ``"mmlu"``: one query per CSV row, task = the MMLU subject (file name), quality = correct (0/1).
    - ``"gsm8k"``: one query per row, task ``"gsm8k"``, quality = correct (0/1).
    - ``"mt_bench"``: one query per (question, turn), task = the MT-Bench category, quality = the GPT-4 judge
      score mapped from [1, 10] onto [0, 1] (``normalize="minmax"``, ``quality_range=(1, 10)``).

    The logs carry no cost, so cost is estimated: ``input_tokens`` from the prompt text
    (:func:`estimate_tokens`; for an MT-Bench second turn, the first question, the model's first answer and the
    second question), ``output_tokens`` from the model's logged answer where the files have it (GSM8K responses,
    MT-Bench answers quoted in the judge prompt) and 1 token (the option letter) for MMLU, priced with
    :data:`ROUTELLM_MODEL_CARDS` (USD per 1M tokens). The estimate is described in ``meta["cost"]``.

    Args:
        dir: folder holding the RouteLLM files.
        task: ``"mmlu"``, ``"gsm8k"`` or ``"mt_bench"``.
        drop_contaminated: drop the prompts RouteLLM found in its router-training data, as RouteLLM's own
            evaluation does (the count goes to ``meta["contaminated_dropped"]``).
        model_cards: other prices for the two models (default :data:`ROUTELLM_MODEL_CARDS`).
        cost: ``"tokens"`` (default): each call priced by its estimated tokens. ``"per_call"``: RouteLLM's own cost
            model, in which every call of a model costs the same — its evaluation (``routellm/evals/evaluate.py``)
            measures cost as the share of calls to the strong model (``strong_percentage``), on which its CPT and
            APGR are defined; each call then costs the model's mean token-priced cost over the loaded queries (the
            same mean USD per model, without the per-prompt variation). ``meta["cost"]`` says which.

    Returns:
        A full-information dataset over ``("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")``, in
        that order (weak, strong) for every task whatever the column order of the files, with prompts, tasks,
        token estimates and USD costs.
    """
    check_choice("task", task, tuple(_ROUTELLM_LAYOUT))
    check_choice("cost", cost, ("tokens", "per_call"))
    root = require_dir(dir, "load_routellm(dir)")
    data_candidates, contaminated_candidates = _ROUTELLM_LAYOUT[task]
    data_path = first_existing(root, data_candidates, f"load_routellm(task={task!r})")
    contaminated: set[str] = set()
    if drop_contaminated:
        cpath = first_existing(
            root, contaminated_candidates, f"load_routellm(task={task!r}, drop_contaminated=True)"
        )
        contaminated = {str(r["eval_prompt"]) for r in read_jsonl_records(cpath) if "eval_prompt" in r}
    cards = dict(ROUTELLM_MODEL_CARDS if model_cards is None else model_cards)

    if task == "mt_bench":
        frame, n_dropped, n_total, output_note = _routellm_mt_bench(root, data_path, contaminated)
    else:
        arrays, n_dropped, n_total, output_note = _routellm_tabular(task, data_path, contaminated, cards)

    meta = {
        "source": f"RouteLLM {task} ({data_path.name})",
        "contaminated_dropped": f"{n_dropped} of {n_total} {'questions' if task == 'mt_bench' else 'prompts'}"
        + (" (drop_contaminated=True)" if drop_contaminated else " (drop_contaminated=False: kept)"),
        "cost": (
            f"estimated: {input_tokens_note('prompt')}, {output_note}; priced with the model cards (USD per 1M tokens)"
        ),
    }
    if task != "mt_bench":
        meta["quality"] = "answer correct (1) or not (0)"
        return _priced(LoggedDataset(**arrays, meta=meta), cost)
    meta["quality"] = "GPT-4 judge score 1–10 mapped linearly onto [0, 1]"
    present = set(frame[S.MODEL])
    loaded = LoggedDataset.from_frame(
        frame,
        model_cards={m: c for m, c in cards.items() if m in present},
        models=_source_order(sorted(present)),
        normalize="minmax",
        quality_range=(1.0, 10.0),
        meta=meta,
    )
    return _priced(loaded, cost)


def _priced(dataset: LoggedDataset, cost: str) -> LoggedDataset:
    """``dataset`` under the ``cost`` convention of :func:`load_routellm` (token-priced as loaded)."""
    if cost == "tokens":
        return dataset
    per_call = np.nanmean(dataset.cost, axis=0)
    meta = dict(dataset.meta)
    meta["cost"] = (
        "per call (RouteLLM's cost model: every call of a model costs the same): each model's mean over these "
        f"queries of the token-priced estimate ({meta['cost']})"
    )
    return dataclasses.replace(dataset, cost=np.broadcast_to(per_call, dataset.cost.shape).copy(), meta=meta)


def _source_order(models: list[str]) -> list[str]:
    """RouteLLM's model order, the same for every task: the weak model, the strong one, then any other models."""
    return [m for m in (_MIXTRAL, _GPT4) if m in models] + [m for m in models if m not in (_MIXTRAL, _GPT4)]


def _routellm_tabular(
    task: str, data_path: Path, contaminated: set[str], cards: Mapping[str, ModelCard]
) -> tuple[dict[str, Any], int, int, str]:
    """Constructor arguments of a LoggedDataset for MMLU/GSM8K, built from arrays (14k rows load in well under
    a second; a long DataFrame would spend most of that converting strings)."""
    if task == "mmlu":
        files = sorted(data_path.glob("mmlu_*.csv")) if data_path.is_dir() else [data_path]
        if not files:
            raise FileNotFoundError(f"load_routellm(task='mmlu'): no mmlu_<subject>.csv files in {data_path}")
        parts = [read_csv(f) for f in files]
        names = [f.stem.removeprefix("mmlu_") for f in files]
    else:
        parts, names = [read_csv(data_path)], ["gsm8k"]
    for f, part in zip(files if task == "mmlu" else [data_path], parts):
        if "prompt" not in part.columns:
            raise SchemaError(f"{f}: RouteLLM files need a 'prompt' column, got {list(part.columns)}")
    subject = np.concatenate([np.full(len(p), name, dtype=object) for p, name in zip(parts, names)])
    row = np.concatenate([np.arange(len(p)) for p in parts])
    wide = pd.concat(parts, ignore_index=True)
    models = _source_order(
        [str(c) for c in wide.columns if c != "prompt" and not str(c).endswith("_response")]
    )
    if not models:
        raise SchemaError(f"{data_path}: no model columns besides 'prompt' and '<model>_response'")
    unpriced = [m for m in models if m not in cards]
    if unpriced:
        raise SchemaError(f"load_routellm: no price card for the models {unpriced} (cards: {sorted(cards)})")
    n_total = len(wide)
    keep = ~wide["prompt"].isin(contaminated).to_numpy()
    wide, subject, row = wide[keep], subject[keep], row[keep]
    prompts = wide["prompt"].to_numpy(dtype=object)
    qids = np.array([f"{task}/{s}/{r}" for s, r in zip(subject, row)], dtype=object)
    in_tok = estimate_tokens(prompts)
    n, k = len(wide), len(models)
    quality = np.empty((n, k))
    inp = np.repeat(in_tok[:, None], k, axis=1)
    out = np.empty((n, k))
    for j, m in enumerate(models):
        correct = wide[m]
        if correct.dtype != bool:
            mapped = correct.map(
                {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}
            )
            if mapped.isna().any():
                bad = correct[mapped.isna()].unique()[:3]
                raise SchemaError(
                    f"{data_path}: column {m!r} must hold True/False, got values like {list(bad)}"
                )
            correct = mapped
        quality[:, j] = correct.to_numpy(dtype=np.float64)
        response_col = f"{m}_response"
        if response_col in wide.columns:
            out[:, j] = estimate_tokens(wide[response_col].to_numpy(dtype=object))
        else:
            out[:, j] = float(_MMLU_OUTPUT_TOKENS)
    cost = token_costs(cards, models, inp, out)
    note = (
        "output_tokens estimated the same way from the logged response"
        if task == "gsm8k"
        else f"output_tokens = {_MMLU_OUTPUT_TOKENS} (the answer letter)"
    )
    kwargs = {
        "models": tuple(models),
        "query_ids": qids,
        "quality": quality,
        "cost": cost,
        "input_tokens": inp,
        "output_tokens": out,
        "prompts": prompts,
        "tasks": subject,
        "model_cards": {m: cards[m] for m in models},
    }
    return kwargs, n_total - n, n_total, note


_ANSWER_SINGLE = re.compile(
    r"\[The Start of Assistant's Answer\]\n?(.*?)\n?\[The End of Assistant's Answer\]", re.S
)
_ANSWER_TURN = re.compile(r"### Assistant A:\s*(.*?)(?=\n\s*### User:|\n?\s*<\|The End of Assistant A)", re.S)


def _mt_bench_answers(user_prompt: str, turn: int) -> str | None:
    """The model's answer to ``turn`` quoted in a GPT-4 judge prompt, or None if it cannot be found."""
    if turn == 1:
        m = _ANSWER_SINGLE.search(user_prompt)
        if m:
            return m.group(1)
    conv = user_prompt.split("<|The Start of Assistant A's Conversation with User|>")
    if len(conv) < 2:
        return None
    answers = _ANSWER_TURN.findall(conv[-1])
    return answers[turn - 1] if len(answers) >= turn else None


def _routellm_mt_bench(
    root: Path, judgements_path: Path, contaminated: set[str]
) -> tuple[pd.DataFrame, int, int, str]:
    qpath = first_existing(
        root, ("mt_bench_questions.jsonl", "mt_bench/question.jsonl"), "load_routellm(task='mt_bench')"
    )
    questions = {int(q["question_id"]): q for q in read_jsonl_records(qpath)}
    judgements = read_jsonl_records(judgements_path)
    for key in ("question_id", "model", "turn", "score"):
        if judgements and key not in judgements[0]:
            raise SchemaError(
                f"{judgements_path}: judgements need a {key!r} field, got {sorted(judgements[0])}"
            )
    n_total = len(questions)
    dropped = {
        qid for qid, q in questions.items() if any(str(t) in contaminated for t in q.get("turns", [])[:2])
    }
    answers: dict[tuple[int, str, int], str | None] = {}
    for j in judgements:
        answers[(int(j["question_id"]), str(j["model"]), int(j["turn"]))] = _mt_bench_answers(
            str(j.get("user_prompt", "")), int(j["turn"])
        )
    rows = []
    n_fallback = 0
    for j in judgements:
        qid, model, turn = int(j["question_id"]), str(j["model"]), int(j["turn"])
        if qid in dropped:
            continue
        if qid not in questions:
            raise SchemaError(f"{judgements_path}: question_id {qid} is not in {qpath.name}")
        turns = questions[qid]["turns"]
        prompt = str(turns[turn - 1])
        # A second turn is answered with the whole conversation as context.
        context = prompt if turn == 1 else f"{turns[0]}\n{answers.get((qid, model, 1)) or ''}\n{turns[1]}"
        answer = answers[(qid, model, turn)]
        if answer is None:
            n_fallback += 1
        rows.append(
            {
                S.QUERY_ID: f"mt_bench/{qid}/turn{turn}",
                S.MODEL: model,
                S.QUALITY: float(j["score"]),
                S.INPUT_TOKENS: float(estimate_tokens([context])[0]),
                S.OUTPUT_TOKENS: float(
                    estimate_tokens([answer])[0] if answer is not None else _MT_BENCH_FALLBACK_OUTPUT_TOKENS
                ),
                S.PROMPT: prompt,
                S.TASK: str(questions[qid].get("category", "mt_bench")),
            }
        )
    frame = pd.DataFrame(rows)
    note = (
        "output_tokens estimated the same way from the answer quoted in the judge prompt"
        + (
            f" ({n_fallback} calls without a quoted answer use {_MT_BENCH_FALLBACK_OUTPUT_TOKENS})"
            if n_fallback
            else ""
        )
        + "; a second turn's input includes the first question and answer"
    )
    return frame, len(dropped), n_total, note
