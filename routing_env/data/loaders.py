"""Loaders for the public routing-log formats people already have.

Each loader returns a :class:`~routing_env.data.dataset.LoggedDataset` built with
:meth:`LoggedDataset.from_frame` or, for the large tabular files, directly from arrays; either way every file goes
through the same validation in the constructor. Whatever a loader changes
(dropped contaminated prompts, deduplicated questions, estimated costs, clipped scores, floored propensities) is
announced with a :class:`~routing_env.errors.DataWarning` when it alters the data and always recorded in
``dataset.meta``.

- :func:`load_routellm`: lm-sys/RouteLLM eval files (MMLU, GSM8K, MT-Bench; Mixtral-8x7B vs GPT-4-1106);
- :func:`load_llmrouter`: ulab-uiuc/LLMRouter dcrouter scores + task metadata + ``llm_candidates.json`` prices;
- :func:`load_routerarena`: RouteWorks/RouterArena cached per-model results (real USD cost and token counts);
- :func:`load_routerbench`: RouterBench's wide table (CSV or the published pickle);
- :func:`load_open_bandit`: the Open Bandit Dataset sample (real bandit feedback with propensities);
- :func:`load_dataset`: any of the above by name, the bundled sample, or a canonical file.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.dataset import LoggedDataset, Normalize
from routing_env.data.schema import ModelCard
from routing_env.errors import ConfigurationError, SchemaError, warn

__all__ = [
    "CHARS_PER_TOKEN",
    "DATASET_NAMES",
    "LLMROUTER_OUTPUT_TOKENS",
    "OPEN_BANDIT_PROPENSITY_FLOOR",
    "ROUTELLM_MODEL_CARDS",
    "estimate_tokens",
    "load_dataset",
    "load_llmrouter",
    "load_open_bandit",
    "load_routellm",
    "load_routerarena",
    "load_routerbench",
]

#: Characters per token used to estimate token counts from text: the usual rule of thumb for English text and
#: BPE tokenizers (GPT-4's cl100k averages about 4 characters per token on English prose).
CHARS_PER_TOKEN = 4.0

_MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
_GPT4 = "gpt-4-1106-preview"

#: Public list prices (USD per 1M tokens) of RouteLLM's two models: Mixtral-8x7B-Instruct as served by
#: Together/Anyscale-style endpoints, GPT-4-1106-preview as listed by OpenAI.
ROUTELLM_MODEL_CARDS: dict[str, ModelCard] = {
    _MIXTRAL: ModelCard(_MIXTRAL, 0.6, 0.6, "Mixtral-8x7B-Instruct-v0.1, public list price (weak model)"),
    _GPT4: ModelCard(_GPT4, 10.0, 30.0, "GPT-4-1106-preview, OpenAI list price (strong model)"),
}

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

#: The propensity that ``load_open_bandit(zero_propensity="floor")`` gives to logged actions whose recorded
#: propensity is 0.0: the smallest non-zero propensity the Open Bandit logs report (1e-6), i.e. the resolution
#: at which ZOZO's Monte-Carlo estimate of the Thompson-sampling probabilities is published.
OPEN_BANDIT_PROPENSITY_FLOOR = 1e-6

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


# ---------------------------------------------------------------------------------------------------- helpers
def estimate_tokens(texts: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """``(n,) float64`` token counts estimated from text: ``ceil(characters / CHARS_PER_TOKEN)``, at least 1.

    An estimate for logs that carry text but no token counts; it is documented in ``meta`` wherever used.
    """
    lengths = pd.Series(texts, dtype=object).fillna("").astype(str).str.len().to_numpy(dtype=np.float64)
    return np.maximum(1.0, np.ceil(lengths / CHARS_PER_TOKEN))


def _require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: no directory at {p}")
    return p


def _first_existing(root: Path, candidates: Sequence[str], what: str) -> Path:
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    raise FileNotFoundError(f"{what}: none of {list(candidates)} exists under {root}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
    return rows


def _scalar(value: Any) -> Any:
    """A numpy scalar as the Python value (for error messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {list(allowed)}, got {value!r}")


# ---------------------------------------------------------------------------------------------------- RouteLLM
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

    Returns:
        A full-information dataset over ``("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")``
        with prompts, tasks, token estimates and USD costs.
    """
    _check_choice("task", task, tuple(_ROUTELLM_LAYOUT))
    root = _require_dir(dir, "load_routellm(dir)")
    data_candidates, contaminated_candidates = _ROUTELLM_LAYOUT[task]
    data_path = _first_existing(root, data_candidates, f"load_routellm(task={task!r})")
    contaminated: set[str] = set()
    if drop_contaminated:
        cpath = _first_existing(
            root, contaminated_candidates, f"load_routellm(task={task!r}, drop_contaminated=True)"
        )
        contaminated = {str(r["eval_prompt"]) for r in _read_jsonl(cpath) if "eval_prompt" in r}
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
            f"estimated: input_tokens = ceil(characters / {CHARS_PER_TOKEN:g}) of the prompt, {output_note}; "
            "priced with the model cards (USD per 1M tokens)"
        ),
    }
    if task != "mt_bench":
        meta["quality"] = "answer correct (1) or not (0)"
        return LoggedDataset(**arrays, meta=meta)
    meta["quality"] = "GPT-4 judge score 1–10 mapped linearly onto [0, 1]"
    present = set(frame[S.MODEL])
    return LoggedDataset.from_frame(
        frame,
        model_cards={m: c for m, c in cards.items() if m in present},
        models=[m for m in (_MIXTRAL, _GPT4) if m in present] + sorted(present - {_MIXTRAL, _GPT4}),
        normalize="minmax",
        quality_range=(1.0, 10.0),
        meta=meta,
    )


def _routellm_tabular(
    task: str, data_path: Path, contaminated: set[str], cards: Mapping[str, ModelCard]
) -> tuple[dict[str, Any], int, int, str]:
    """Constructor arguments of a LoggedDataset for MMLU/GSM8K, built from arrays (14k rows load in well under
    a second; a long DataFrame would spend most of that converting strings)."""
    if task == "mmlu":
        files = sorted(data_path.glob("mmlu_*.csv")) if data_path.is_dir() else [data_path]
        if not files:
            raise FileNotFoundError(f"load_routellm(task='mmlu'): no mmlu_<subject>.csv files in {data_path}")
        parts = [pd.read_csv(f) for f in files]
        names = [f.stem.removeprefix("mmlu_") for f in files]
    else:
        parts, names = [pd.read_csv(data_path)], ["gsm8k"]
    for f, part in zip(files if task == "mmlu" else [data_path], parts):
        if "prompt" not in part.columns:
            raise SchemaError(f"{f}: RouteLLM files need a 'prompt' column, got {list(part.columns)}")
    subject = np.concatenate([np.full(len(p), name, dtype=object) for p, name in zip(parts, names)])
    row = np.concatenate([np.arange(len(p)) for p in parts])
    wide = pd.concat(parts, ignore_index=True)
    models = [c for c in wide.columns if c != "prompt" and not str(c).endswith("_response")]
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
    cost = np.column_stack([cards[m].cost(inp[:, j], out[:, j]) for j, m in enumerate(models)])
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
    qpath = _first_existing(
        root, ("mt_bench_questions.jsonl", "mt_bench/question.jsonl"), "load_routellm(task='mt_bench')"
    )
    questions = {int(q["question_id"]): q for q in _read_jsonl(qpath)}
    judgements = _read_jsonl(judgements_path)
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


# ---------------------------------------------------------------------------------------------------- LLMRouter
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
        Query ids are ``"train/<i>"`` / ``"test/<i>"`` (position in the source file).
    """
    _check_choice("split", split, ("train", "test", "all"))
    root = _require_dir(dir, "load_llmrouter(dir)")
    lengths = {**LLMROUTER_OUTPUT_TOKENS, **dict(output_tokens or {})}
    for name, value in lengths.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigurationError(f"output_tokens[{name!r}] must be an int ≥ 0, got {value!r}")

    def items(which: str) -> list[dict[str, Any]]:
        path = root / f"dcrouter_{which}.json"
        if not path.exists():
            raise FileNotFoundError(f"load_llmrouter: {path} not found")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or (data and not {"question", "scores"} <= set(data[0])):
            raise SchemaError(f"{path}: expected a JSON list of objects with 'question' and 'scores'")
        return data

    def task_table(which: str) -> tuple[dict[str, str], int]:
        path = root / f"query_meta_{which}.jsonl"
        table: dict[str, str] = {}
        ambiguous: set[str] = set()
        if not path.exists():
            return table, 0
        for r in _read_jsonl(path):
            q, t = str(r.get("query", "")), r.get("task_name")
            if t is None:
                continue
            if q in table and table[q] != t:
                ambiguous.add(q)
            table.setdefault(q, str(t))
        return table, len(ambiguous)

    train, test = items("train"), items("test")
    train_q = {str(x["question"]) for x in train}
    overlap = [x for x in test if str(x["question"]) in train_q]
    train_scores = {str(x["question"]): x["scores"] for x in train}
    differ = sum(train_scores[str(x["question"])] != x["scores"] for x in overlap)
    if split == "train":
        chosen = [("train", i, x) for i, x in enumerate(train)]
    elif split == "test":
        chosen = [("test", i, x) for i, x in enumerate(test) if str(x["question"]) not in train_q]
    else:
        chosen = [("train", i, x) for i, x in enumerate(train)]
        chosen += [("test", i, x) for i, x in enumerate(test) if str(x["question"]) not in train_q]
    overlap_note = (
        f"{len(overlap)} questions occur in both dcrouter_train.json and dcrouter_test.json "
        f"({differ} with different scores); "
        + {
            "train": "all kept in split='train'",
            "test": "dropped from split='test' so that it stays held out",
            "all": "kept once, with the train scores",
        }[split]
    )
    if overlap and split != "train":
        warn(f"load_llmrouter(split={split!r}): {overlap_note}")

    tables = {w: task_table(w) for w in ("train", "test")}
    cpath = root / "llm_candidates.json"
    if not cpath.exists():
        raise FileNotFoundError(f"load_llmrouter: {cpath} not found (the per-model prices)")
    candidates = json.loads(cpath.read_text(encoding="utf-8"))
    models: list[str] = []
    for _, _, x in chosen:
        for m in x["scores"]:
            if m not in models:
                models.append(str(m))
    missing_price = [m for m in models if m not in candidates]
    if missing_price:
        raise SchemaError(f"{cpath}: no price for the scored models {missing_price}")
    cards = {
        m: ModelCard(
            m,
            float(candidates[m]["input_price"]),
            float(candidates[m]["output_price"]),
            str(candidates[m].get("feature", "")),
        )
        for m in models
    }
    qids, prompts, tasks = [], [], []
    n_no_task = 0
    for which, i, x in chosen:
        q = str(x["question"])
        other = "test" if which == "train" else "train"
        task = tables[which][0].get(q, tables[other][0].get(q))
        n_no_task += task is None
        qids.append(f"{which}/{i}")
        prompts.append(q)
        tasks.append(task)
    in_tok = estimate_tokens(prompts)
    out_tok = np.array(
        [float(lengths.get(t, _DEFAULT_OUTPUT_TOKENS)) if t else _DEFAULT_OUTPUT_TOKENS for t in tasks]
    )
    n, k = len(chosen), len(models)
    quality = np.full((n, k), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for r, (_, _, x) in enumerate(chosen):
        for m, s in x["scores"].items():
            quality[r, col[str(m)]] = np.nan if s is None else float(s)
    frame = pd.DataFrame(
        {
            S.QUERY_ID: np.repeat(np.asarray(qids, dtype=object), k),
            S.MODEL: np.tile(np.asarray(models, dtype=object), n),
            S.QUALITY: quality.ravel(),
            S.INPUT_TOKENS: np.repeat(in_tok, k),
            S.OUTPUT_TOKENS: np.repeat(out_tok, k),
            S.PROMPT: np.repeat(np.asarray(prompts, dtype=object), k),
            S.TASK: np.repeat(np.asarray(tasks, dtype=object), k),
        }
    )
    # A model without a score on a query was not run on it: no row rather than a NaN outcome.
    frame = frame[~np.isnan(quality.ravel())]
    n_ambiguous = tables["train"][1] + tables["test"][1]
    meta = {
        "source": f"LLMRouter dcrouter {split}",
        "train_test_overlap": overlap_note,
        "tasks": f"joined on question text from query_meta_*.jsonl; {n_ambiguous} questions listed under two "
        f"tasks (first listing kept); {n_no_task} without a task",
        "cost": (
            f"estimated: input_tokens = ceil(characters / {CHARS_PER_TOKEN:g}) of the question, output_tokens = a "
            f"per-task answer-length assumption ({_DEFAULT_OUTPUT_TOKENS} for unknown tasks), priced with "
            "llm_candidates.json (USD per 1M tokens); not logged costs"
        ),
        "quality": "LLMRouter score in [0, 1] (accuracy, F1 or partial credit by task)",
    }
    return LoggedDataset.from_frame(frame, model_cards=cards, models=models, meta=meta)


# ---------------------------------------------------------------------------------------------------- RouterArena
def load_routerarena(
    dir: str | Path,
    *,
    normalize: Normalize | None = "clip",
    task_level: Literal["dataset", "subcategory"] = "dataset",
) -> LoggedDataset:
    """Load RouterArena's cached per-model results: real USD cost and token counts per call.

    Every ``*.jsonl`` file of ``dir`` holds one model's answers (``global_index``, ``question``,
    ``llm_selected``, ``token_usage``, ``evaluation_result.score`` / ``.inference_cost``). Queries are joined on
    ``global_index``; cost is the logged ``inference_cost`` (USD). When ``model_cost.json`` is present its prices
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
    _check_choice("normalize", normalize, ("clip", "minmax", None))
    _check_choice("task_level", task_level, ("dataset", "subcategory"))
    root = _require_dir(dir, "load_routerarena(dir)")
    files = sorted(p for p in root.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"load_routerarena: no per-model .jsonl files in {root}")
    rows = []
    for path in files:
        for lineno, r in enumerate(_read_jsonl(path), 1):
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
                    f"{path}:{lineno}: RouterArena records need 'global_index' and 'evaluation_result' "
                    f"({exc!r})"
                ) from None
    frame = pd.DataFrame(rows)
    gid = frame[S.QUERY_ID]
    if task_level == "dataset":
        frame[S.TASK] = gid.str.split("_", n=1).str[0]
    else:
        frame[S.TASK] = gid.str.replace(r"_\d+$", "", regex=True)
    # The same question text is sent to every model; should a file differ, the first file's text is the query's.
    first_prompt = frame.groupby(S.QUERY_ID, sort=False)[S.PROMPT].transform("first")
    n_differ = int(frame.loc[frame[S.PROMPT] != first_prompt, S.QUERY_ID].nunique())
    frame[S.PROMPT] = first_prompt
    cards: dict[str, ModelCard] = {}
    cost_path = root / "model_cost.json"
    if cost_path.exists():
        prices = json.loads(cost_path.read_text(encoding="utf-8"))
        for m in frame[S.MODEL].unique():
            if m in prices:
                p = prices[m]
                cards[str(m)] = ModelCard(
                    str(m),
                    float(p["input_token_price_per_million"]),
                    float(p["output_token_price_per_million"]),
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
        warn(f"load_routerarena: {msg}")
        meta["prompts"] = msg
    return LoggedDataset.from_frame(frame, model_cards=cards, normalize=normalize, meta=meta)


# ---------------------------------------------------------------------------------------------------- RouterBench
_RB_RESPONSE = "|model_response"
_RB_COST = "|total_cost"
_RB_FIXED = ("sample_id", "prompt", "eval_name", "oracle_model_to_route_to")


def load_routerbench(
    path: str | Path,
    *,
    missing_quality: Literal["drop_query", "keep"] = "drop_query",
    normalize: Normalize | None = None,
    quality_range: tuple[float, float] | None = None,
) -> LoggedDataset:
    """Load RouterBench's wide table (``routerbench_0shot.pkl``/``routerbench_5shot.pkl`` or a CSV export).

    Columns: ``sample_id``, ``prompt``, ``eval_name`` (the task), one quality column per model,
    ``<model>|model_response``, ``<model>|total_cost`` (USD) and ``oracle_model_to_route_to`` (ignored: the oracle
    is recomputed from the outcomes). The models are the columns that have a ``<model>|total_cost`` partner.

    **Trust:** a ``.pkl``/``.pickle`` file is read with :func:`pandas.read_pickle`, which can run code embedded in
    the file. RouterBench is published as a pickle, so this loader accepts one; only pass files you trust (or
    convert the table to CSV/parquet once).

    The published data has defects this loader handles, each reported with a warning and in ``meta``:

    - NaN quality cells: ``missing_quality="drop_query"`` (default) drops those queries so the data stays
      full-information (exact replay); ``"keep"`` leaves those cells unobserved (partial data).
    - duplicated ``sample_id``: rows identical in prompt, task, quality and cost are kept once; rows that share
      an id but differ get ids made unique with a ``#<k>`` suffix (k = occurrence number, from 1).

    Args:
        path: the ``.pkl``/``.pickle``, ``.csv`` or ``.parquet`` file.
        missing_quality: ``"drop_query"`` or ``"keep"`` (see above).
        normalize, quality_range: passed to :meth:`LoggedDataset.from_frame` for a quality scale other than [0, 1].
    """
    _check_choice("missing_quality", missing_quality, ("drop_query", "keep"))
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"load_routerbench: no file at {p}")
    suffix = p.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        wide = pd.read_pickle(p)  # trust decision documented above
    elif suffix == ".csv":
        wide = pd.read_csv(p, dtype={"sample_id": str, "prompt": str, "eval_name": str})
    elif suffix == ".parquet":
        wide = pd.read_parquet(p)
    else:
        raise SchemaError(f"load_routerbench: expected a .pkl, .csv or .parquet file, got {p.name!r}")
    if not isinstance(wide, pd.DataFrame):
        raise SchemaError(f"load_routerbench: {p} holds a {type(wide).__name__}, expected a DataFrame")
    wide = wide.reset_index(drop=True)
    columns = [str(c) for c in wide.columns]
    missing = [c for c in ("sample_id", "prompt") if c not in columns]
    if missing:
        raise SchemaError(f"load_routerbench: {p} lacks the columns {missing}; it has {columns[:12]}…")
    models = [c[: -len(_RB_COST)] for c in columns if c.endswith(_RB_COST)]
    if not models:
        raise SchemaError(f"load_routerbench: {p} has no '<model>|total_cost' columns")
    no_quality = [m for m in models if m not in columns]
    if no_quality:
        raise SchemaError(
            f"load_routerbench: models {no_quality} have a total_cost column but no quality column"
        )
    notes: dict[str, str] = {"source": f"RouterBench ({p.name})", "cost": "logged <model>|total_cost (USD)"}

    # Prompts may be stored as lists of messages in the pickle; keep them as text.
    wide["prompt"] = wide["prompt"].map(lambda v: v if isinstance(v, str) else str(v))
    sid = wide["sample_id"].astype(str)
    q = wide[models].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    c = wide[[m + _RB_COST for m in models]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    task = wide["eval_name"].astype(str) if "eval_name" in columns else pd.Series([None] * len(wide))

    # Duplicated sample ids: drop exact repeats, rename conflicting ones.
    key = pd.DataFrame({"sid": sid, "prompt": wide["prompt"], "task": task})
    key = pd.concat(
        [
            key,
            pd.DataFrame(np.nan_to_num(q, nan=-1.0)),
            pd.DataFrame(np.nan_to_num(c, nan=-1.0)).add_prefix("c"),
        ],
        axis=1,
    )
    exact = key.duplicated()
    n_exact = int(exact.sum())
    keep_rows = ~exact.to_numpy()
    sid, q, c, task = sid[keep_rows], q[keep_rows], c[keep_rows], task[keep_rows]
    prompts = wide["prompt"][keep_rows]
    occurrence = sid.groupby(sid).cumcount()
    clash = sid.duplicated(keep=False)
    n_renamed = int(clash.sum())
    sid = sid.where(~clash, sid + "#" + (occurrence + 1).astype(str))
    if n_exact or n_renamed:
        msg = (
            f"{n_exact} rows repeating an earlier row exactly were dropped; {n_renamed} rows sharing a sample_id "
            "with different content got a '#<k>' suffix"
        )
        warn(f"load_routerbench: duplicated sample_id: {msg}")
        notes["duplicate_sample_ids"] = msg

    nan_rows = np.isnan(q).any(axis=1)
    if nan_rows.any():
        if missing_quality == "drop_query":
            msg = f"{int(nan_rows.sum())} queries with a NaN quality cell dropped (missing_quality='drop_query')"
            keep = ~nan_rows
            sid, q, c, task, prompts = sid[keep], q[keep], c[keep], task[keep], prompts[keep]
        else:
            msg = f"{int(np.isnan(q).sum())} NaN quality cells kept as unobserved (missing_quality='keep')"
        warn(f"load_routerbench: {msg}")
        notes["missing_quality"] = msg
    n, k = len(sid), len(models)
    frame = pd.DataFrame(
        {
            S.QUERY_ID: np.repeat(sid.to_numpy(dtype=object), k),
            S.MODEL: np.tile(np.asarray(models, dtype=object), n),
            S.QUALITY: q.ravel(),
            S.COST: c.ravel(),
            S.PROMPT: np.repeat(prompts.to_numpy(dtype=object), k),
            S.TASK: np.repeat(task.to_numpy(dtype=object), k),
        }
    )
    # An unobserved cell is no row at all (a NaN quality with a cost would read as "called, outcome unknown").
    frame = frame[~np.isnan(q.ravel())]
    return LoggedDataset.from_frame(
        frame, models=models, normalize=normalize, quality_range=quality_range, meta=notes
    )


# ---------------------------------------------------------------------------------------------------- Open Bandit
def load_open_bandit(
    dir: str | Path,
    policy: Literal["random", "bts"] = "random",
    campaign: Literal["all", "men", "women"] = "all",
    *,
    zero_propensity: Literal["floor", "drop", "error"] = "floor",
    user_features: Literal["onehot", "hashed"] = "onehot",
    hash_buckets: int = 16,
) -> LoggedDataset:
    """Load the Open Bandit Dataset (ZOZOTOWN fashion recommendation) as bandit feedback.

    Reads ``dir/<policy>/<campaign>/<campaign>.csv`` (the layout of ``obp``'s ``obd/`` folder). Not LLM routing,
    but real logs with real propensities, for testing off-policy estimators.

    Mapping onto the canonical format:

    - each impression (row) is a query, ``query_id = "<policy>/<campaign>/<row index>"``;
    - the "models" are the items, named ``item_<id>`` for every id from 0 to the largest in the file;
    - **partial information**: only the logged item's cell is observed, with quality = click (0/1) and cost 0
      (the cost of showing an item is not part of this data);
    - ``logged_action`` = the item shown, ``propensity`` = the file's ``propensity_score`` (the logging
      probability of that item *at that position*; obp treats (item, position) as the action);
    - ``features (n, d) float32``: the user features, then the ``user-item_affinity_<k>`` columns, then one
      column **named** ``position`` holding the slot as 0, 1 or 2 (the file's 1/2/3 minus 1). OPE code that needs
      the slot reads it with ``dataset.features[:, dataset.feature_names.index("position")]``.
      User features are hashed categorical strings; ``user_features="onehot"`` one-hot encodes the categories
      seen in this file (columns ``user_feature_<i>=<value>``, as obp does), ``"hashed"`` maps each into
      ``hash_buckets`` one-hot buckets by a stable CRC-32 of the value (columns ``user_feature_<i>#<b>``), so
      that logs of different policies share a feature layout.

    Propensities: the Thompson-sampling (``bts``) probabilities are Monte-Carlo estimates published with finite
    precision, and can read 0.0 for an item that was nevertheless shown. An importance weight 1/0 is undefined,
    so ``zero_propensity`` decides, never silently:

    - ``"floor"`` (default): set them to :data:`OPEN_BANDIT_PROPENSITY_FLOOR` (1e-6, the smallest non-zero value
      the logs report), with a :class:`~routing_env.errors.DataWarning` naming the count, recorded in ``meta``;
    - ``"drop"``: drop those impressions (warning and ``meta`` as well);
    - ``"error"``: raise :class:`~routing_env.errors.SchemaError`.

    Negative, NaN or > 1 propensities are always an error.
    """
    _check_choice("policy", policy, ("random", "bts"))
    _check_choice("campaign", campaign, ("all", "men", "women"))
    _check_choice("zero_propensity", zero_propensity, ("floor", "drop", "error"))
    _check_choice("user_features", user_features, ("onehot", "hashed"))
    if not isinstance(hash_buckets, (int, np.integer)) or hash_buckets < 1:
        raise ConfigurationError(f"hash_buckets must be an int ≥ 1, got {hash_buckets!r}")
    root = _require_dir(dir, "load_open_bandit(dir)")
    path = root / policy / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"load_open_bandit: {path} not found (expected <dir>/<policy>/<campaign>/<campaign>.csv)"
        )
    raw = pd.read_csv(path, index_col=0)
    required = ["item_id", "position", "click", "propensity_score"]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise SchemaError(f"load_open_bandit: {path} lacks the columns {missing}")
    notes: dict[str, str] = {
        "source": f"Open Bandit Dataset {policy}/{campaign} ({path.name})",
        "quality": "click (0/1) on the logged item only: partial information",
        "cost": "0 (not part of this data)",
        "features": "user features, user-item affinities, then 'position' (0, 1, 2)",
    }
    prop = pd.to_numeric(raw["propensity_score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(prop) | (prop < 0) | (prop > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SchemaError(
            f"load_open_bandit: propensity_score must lie in [0, 1], got {_scalar(raw['propensity_score'].iloc[i])!r} "
            f"at row {raw.index[i]!r} of {path} ({int(bad.sum())} rows)"
        )
    zero = prop == 0.0
    if zero.any():
        count = int(zero.sum())
        if zero_propensity == "error":
            raise SchemaError(
                f"load_open_bandit: {count} impressions of {path} have propensity_score 0.0 although their item "
                "was shown; pass zero_propensity='floor' or 'drop' to load them"
            )
        if zero_propensity == "floor":
            prop = np.where(zero, OPEN_BANDIT_PROPENSITY_FLOOR, prop)
            msg = f"{count} zero propensities floored to {OPEN_BANDIT_PROPENSITY_FLOOR:g} (zero_propensity='floor')"
        else:
            msg = f"{count} impressions with zero propensity dropped (zero_propensity='drop')"
            raw, prop = raw[~zero], prop[~zero]
        warn(f"load_open_bandit({policy}/{campaign}): {msg}")
        notes["zero_propensity"] = msg
    items = pd.to_numeric(raw["item_id"], errors="raise").to_numpy(dtype=np.int64)
    if (items < 0).any():
        raise SchemaError(f"load_open_bandit: item_id must be ≥ 0, got {int(items.min())}")
    n_items = int(items.max()) + 1
    models = tuple(f"item_{i}" for i in range(n_items))
    position = pd.to_numeric(raw["position"], errors="raise").to_numpy(dtype=np.int64)
    if not np.isin(position, (1, 2, 3)).all():
        raise SchemaError(
            f"load_open_bandit: position must be 1, 2 or 3, got {sorted(set(position.tolist()))}"
        )
    click = pd.to_numeric(raw["click"], errors="raise").to_numpy(dtype=np.float64)

    blocks: list[np.ndarray] = []
    names: list[str] = []
    user_cols = sorted(
        (c for c in raw.columns if re.fullmatch(r"user_feature_\d+", str(c))),
        key=lambda c: int(c.rsplit("_", 1)[1]),
    )
    for col in user_cols:
        values = raw[col].astype(str).to_numpy()
        if user_features == "onehot":
            cats = sorted(set(values.tolist()))
            codes = np.searchsorted(np.asarray(cats), values)
            width, labels = len(cats), [f"{col}={v}" for v in cats]
        else:
            codes = np.array([zlib.crc32(v.encode()) % hash_buckets for v in values], dtype=np.int64)
            width, labels = hash_buckets, [f"{col}#{b}" for b in range(hash_buckets)]
        block = np.zeros((len(values), width), dtype=np.float32)
        block[np.arange(len(values)), codes] = 1.0
        blocks.append(block)
        names += labels
    aff_cols = sorted(
        (c for c in raw.columns if re.fullmatch(r"user-item_affinity_\d+", str(c))),
        key=lambda c: int(c.rsplit("_", 1)[1]),
    )
    if aff_cols:
        blocks.append(raw[aff_cols].to_numpy(dtype=np.float32))
        names += aff_cols
    blocks.append((position - 1).astype(np.float32)[:, None])
    names.append("position")
    features = np.hstack(blocks)

    n = len(raw)
    qids = np.array([f"{policy}/{campaign}/{i}" for i in raw.index], dtype=object)
    quality = np.full((n, n_items), np.nan)
    cost = np.full((n, n_items), np.nan)
    observed = np.zeros((n, n_items), dtype=bool)
    rows = np.arange(n)
    quality[rows, items] = click
    cost[rows, items] = 0.0
    observed[rows, items] = True
    if n and (np.isnan(click).any() or not np.isin(click, (0.0, 1.0)).all()):
        raise SchemaError("load_open_bandit: click must be 0 or 1 on every row")
    empty = [m for j, m in enumerate(models) if not observed[:, j].any()]
    if empty:
        warn(f"load_open_bandit: items {empty} are never shown in {path.name}")
    return LoggedDataset(
        models=models,
        query_ids=qids,
        quality=quality,
        cost=cost,
        observed=observed,
        features=features,
        feature_names=tuple(names),
        logged_action=items,
        propensity=prop,
        meta=notes,
    )


# ---------------------------------------------------------------------------------------------------- dispatcher
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
    if path.suffix.lower() in (".parquet", ".csv", ".jsonl", ".ndjson"):
        return LoggedDataset.read(path, **kwargs)
    raise ConfigurationError(
        f"load_dataset: {name!r} is neither a dataset name {sorted(DATASET_NAMES)} nor a .parquet/.csv/.jsonl path"
    )
