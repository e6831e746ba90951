"""Synthetic routing logs with known ground truth.

Queries have a task (domain) and a latent difficulty. Each model has a global ability and a per-task skill; the
chance that a model answers a query correctly follows a two-parameter item-response model::

    P(correct | model m, query q) = sigmoid(discrimination · (ability_m + skill_{m,task_q} − difficulty_q))

Judge-scored tasks (``writing``) get a continuous quality in [0, 1] around that probability instead of 0/1.
Costs come from a price card per model (USD per 1M tokens) and token counts: input tokens depend on the task,
output tokens on the task and the model's verbosity. Latency is a time-to-first-token plus output tokens over the
model's decoding speed.

The ``signal`` of a call is a calibrated confidence: the model's prior chance ``p`` updated with a noisy look at
the outcome, ``s_raw = δ·quality + N(0, 1)``, so ``P(correct | p, s_raw)`` is exact and, at a fixed ``p``, the
signal separates right from wrong answers with ROC AUC ``signal_auroc = Φ(δ/√2)``.

Features are what a router can know before any call: a noisy view of the task and of the difficulty, in
``n_features`` dimensions; prompts are short texts whose words carry the same information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.data.schema import ModelCard
from routing_env.errors import ConfigurationError


@dataclass(frozen=True)
class SyntheticModel:
    """Ground truth of one synthetic model.

    Args:
        card: price card (USD per 1M input/output tokens).
        ability: global ability on the item-response scale.
        verbosity: multiplies the task's typical output length.
        tokens_per_s: decoding speed, output tokens per second.
        ttft_s: time to first token, seconds.
    """

    card: ModelCard
    ability: float
    verbosity: float
    tokens_per_s: float
    ttft_s: float


#: A price ladder in the spirit of public list prices (USD per 1M tokens), from small open models to frontier ones.
DEFAULT_MODELS: tuple[SyntheticModel, ...] = (
    SyntheticModel(ModelCard("small-3b", 0.06, 0.06, "3B open model"), -1.0, 0.9, 180.0, 0.15),
    SyntheticModel(ModelCard("open-8b", 0.18, 0.18, "8B open model"), -0.4, 1.0, 140.0, 0.2),
    SyntheticModel(ModelCard("mixture-47b", 0.6, 0.6, "47B mixture of experts"), 0.2, 1.1, 90.0, 0.3),
    SyntheticModel(ModelCard("open-70b", 0.88, 0.88, "70B open model"), 0.5, 1.0, 60.0, 0.35),
    SyntheticModel(ModelCard("mini-frontier", 0.15, 0.6, "distilled frontier model"), 0.45, 1.2, 110.0, 0.3),
    SyntheticModel(ModelCard("frontier-large", 2.5, 10.0, "frontier model"), 1.2, 1.3, 50.0, 0.5),
    SyntheticModel(ModelCard("frontier-reasoning", 15.0, 60.0, "reasoning model"), 1.8, 3.0, 40.0, 1.5),
)

DEFAULT_TASKS: tuple[str, ...] = ("math", "code", "knowledge", "reasoning", "writing")
_JUDGED_TASKS = frozenset({"writing"})
# Typical prompt and answer lengths (tokens) per task; unknown tasks take the middle values.
_INPUT_TOKENS = {"math": 180, "code": 350, "knowledge": 120, "reasoning": 250, "writing": 200}
_OUTPUT_TOKENS = {"math": 350, "code": 450, "knowledge": 60, "reasoning": 400, "writing": 600}
_VOCAB = {
    "math": "integer sum prove equation derivative compute probability triangle fraction modulo",
    "code": "function python bug compile array recursion sql regex class unittest",
    "knowledge": "capital history who year river author element treaty species anatomy",
    "reasoning": "puzzle deduce if then logic riddle order grid implies constraint",
    "writing": "essay poem story email rewrite tone summary draft persuasive blog",
}
_HARD_WORDS = [
    "rigorous",
    "multi-step",
    "advanced",
    "olympiad",
    "obscure",
    "edge-case",
    "subtle",
    "lengthy",
    "tricky",
    "nested",
]
_EASY_WORDS = ["simple", "basic", "quick", "short", "easy", "common", "brief", "plain", "direct", "small"]


def make_synthetic(
    n_queries: int = 2000,
    models: Sequence[SyntheticModel] | int | None = None,
    tasks: Sequence[str] = DEFAULT_TASKS,
    n_features: int = 16,
    feature_noise: float = 0.5,
    signal_auroc: float = 0.8,
    skill_spread: float = 0.8,
    discrimination: float = 1.7,
    seed: int = 0,
) -> LoggedDataset:
    """Generate full-information routing logs with a known generating process.

    Args:
        n_queries: number of queries n.
        models: the models; an int takes the first that many of :data:`DEFAULT_MODELS`; default all 7.
        tasks: task names; queries are spread uniformly over them.
        n_features: width d of the query features (≥ 2).
        feature_noise: std of the Gaussian noise added to the informative feature directions.
        signal_auroc: ROC AUC, at a fixed prior, of a call's ``signal`` for telling right from wrong answers,
            in (0.5, 1).
        skill_spread: std of the per-task skill of each model (how much "which model for which task" matters).
        discrimination: slope of the item-response model.
        seed: seed of every random draw; same seed, same dataset.

    Returns:
        A :class:`LoggedDataset` with quality, cost (USD), tokens, latency (s), signal, prompts, tasks and
        ``features (n, d) float32``.
    """
    if n_queries < 1:
        raise ConfigurationError(f"n_queries must be ≥ 1, got {n_queries}")
    if n_features < 2:
        raise ConfigurationError(f"n_features must be ≥ 2 (task and difficulty directions), got {n_features}")
    if not 0.5 < signal_auroc < 1.0:
        raise ConfigurationError(f"signal_auroc must lie in (0.5, 1), got {signal_auroc}")
    if not tasks:
        raise ConfigurationError("tasks must name at least one task")
    if models is None:
        spec = DEFAULT_MODELS
    elif isinstance(models, int):
        if not 1 <= models <= len(DEFAULT_MODELS):
            raise ConfigurationError(f"models must be in [1, {len(DEFAULT_MODELS)}] as an int, got {models}")
        spec = DEFAULT_MODELS[:models]
    else:
        spec = tuple(models)
    rng = np.random.default_rng(seed)
    n, k, t = n_queries, len(spec), len(tasks)

    task_idx = rng.integers(0, t, size=n)
    difficulty = rng.normal(0.0, 1.0, size=n)
    ability = np.array([m.ability for m in spec])
    skill = rng.normal(0.0, skill_spread, size=(k, t))
    # Centre each model's task skills so that its global ability alone sets its average rank.
    skill -= skill.mean(axis=1, keepdims=True)
    logit = discrimination * (ability[None, :] + skill[:, task_idx].T - difficulty[:, None])
    p = 1.0 / (1.0 + np.exp(-logit))

    judged = np.array([tasks[i] in _JUDGED_TASKS for i in task_idx])
    correct = (rng.random((n, k)) < p).astype(np.float64)
    # Judge scores: a Beta draw centred on p, quantised to a 1–10 judge scale mapped onto [0, 1].
    concentration = 8.0
    judge = rng.beta(p * concentration + 0.5, (1 - p) * concentration + 0.5)
    judge = np.round(judge * 9) / 9
    quality = np.where(judged[:, None], judge, correct)

    delta = np.sqrt(2.0) * NormalDist().inv_cdf(signal_auroc)
    s_raw = delta * quality + rng.normal(size=(n, k))
    conf_logit = np.log(p) - np.log1p(-p) + delta * s_raw - delta**2 / 2
    signal = 1.0 / (1.0 + np.exp(-conf_logit))

    in_mean = np.array([_INPUT_TOKENS.get(tasks[i], 200) for i in task_idx], dtype=np.float64)
    out_mean = np.array([_OUTPUT_TOKENS.get(tasks[i], 300) for i in task_idx], dtype=np.float64)
    input_tokens = np.maximum(8, np.round(in_mean * rng.lognormal(0.0, 0.4, size=n)))
    input_tokens = np.repeat(input_tokens[:, None], k, axis=1)
    verbosity = np.array([m.verbosity for m in spec])
    # Harder queries draw longer answers.
    out_scale = out_mean[:, None] * verbosity[None, :] * np.exp(0.2 * difficulty)[:, None]
    output_tokens = np.maximum(1, np.round(out_scale * rng.lognormal(0.0, 0.35, size=(n, k))))
    cost = np.column_stack([m.card.cost(input_tokens[:, j], output_tokens[:, j]) for j, m in enumerate(spec)])
    speed = np.array([m.tokens_per_s for m in spec])
    ttft = np.array([m.ttft_s for m in spec])
    latency = ttft[None, :] * rng.lognormal(0.0, 0.2, size=(n, k)) + output_tokens / speed[None, :]

    directions = rng.normal(size=(t + 1, n_features))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    features = (
        2.0 * directions[task_idx]
        + difficulty[:, None] * directions[t][None, :]
        + rng.normal(0.0, feature_noise, size=(n, n_features))
    ).astype(np.float32)

    prompts = np.empty(n, dtype=object)
    vocab = {name: _VOCAB.get(name, name).split() for name in tasks}
    n_words = rng.integers(6, 14, size=n)
    for i in range(n):
        words = list(rng.choice(vocab[tasks[task_idx[i]]], size=n_words[i]))
        tone = _HARD_WORDS if rng.random() < 1.0 / (1.0 + np.exp(-1.5 * difficulty[i])) else _EASY_WORDS
        words += list(rng.choice(tone, size=3))
        rng.shuffle(words)
        prompts[i] = " ".join(words) + f" #{i}"

    return LoggedDataset(
        models=tuple(m.card.name for m in spec),
        query_ids=np.array([f"q{i:06d}" for i in range(n)], dtype=object),
        quality=quality,
        cost=cost,
        features=features,
        latency=latency,
        signal=signal,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        prompts=prompts,
        tasks=np.array([tasks[i] for i in task_idx], dtype=object),
        model_cards={m.card.name: m.card for m in spec},
        meta={
            "source": f"routing_env.data.make_synthetic(seed={seed})",
            "signal": f"simulated calibrated confidence, within-prior ROC AUC {signal_auroc}",
        },
    )
