"""Loaders for the public routing-log formats people already have, one module per source format.

Each loader returns a :class:`~routing_env.data.dataset.LoggedDataset` built with
:meth:`LoggedDataset.from_frame` or, for the large tabular files, directly from arrays; either way every file goes
through the same validation in the constructor. Whatever a loader changes
(dropped contaminated prompts, deduplicated questions, estimated costs, clipped scores, floored propensities) is
announced with a :class:`~routing_env.errors.DataWarning` when it alters the data and always recorded in
``dataset.meta``.

- :func:`load_routellm` (``routellm.py``): lm-sys/RouteLLM eval files (MMLU, GSM8K, MT-Bench; Mixtral-8x7B vs
  GPT-4-1106);
- :func:`load_llmrouter` (``llmrouter.py``): ulab-uiuc/LLMRouter dcrouter scores + task metadata +
  ``llm_candidates.json`` prices;
- :func:`load_routerarena` (``routerarena.py``): RouteWorks/RouterArena cached per-model results (real USD cost
  and token counts);
- :func:`load_routerbench` (``routerbench.py``): RouterBench's wide table (CSV or the published pickle);
- :func:`load_open_bandit` (``open_bandit.py``): the Open Bandit Dataset sample (real bandit feedback with
  propensities);
- :func:`load_dataset` (``canonical.py``): any of the above by name, the bundled sample, or a canonical file.

Model order: every split or file of one source gives the same model (column) order, the source's own list, so a
router fitted on one split scores another: RouteLLM weak then strong; LLMRouter the order of
``llm_candidates.json``; RouterArena the per-model files in name order; RouterBench the order of the
``<model>|total_cost`` columns; Open Bandit the item ids, one per affinity column.

Shared helpers: ``_prices.py`` (token estimates, price cards, token-based costs), ``_warnings.py`` (announcing a
change to the data), ``_inputs.py`` (argument and file checks).
"""

from routing_env.data.loaders._prices import CHARS_PER_TOKEN, estimate_tokens
from routing_env.data.loaders.canonical import DATASET_NAMES, DATASETS_ENV, load_dataset
from routing_env.data.loaders.llmrouter import LLMROUTER_OUTPUT_TOKENS, load_llmrouter
from routing_env.data.loaders.open_bandit import OPEN_BANDIT_PROPENSITY_FLOOR, load_open_bandit
from routing_env.data.loaders.routellm import ROUTELLM_MODEL_CARDS, load_routellm
from routing_env.data.loaders.routerarena import load_routerarena
from routing_env.data.loaders.routerbench import load_routerbench

__all__ = [
    "CHARS_PER_TOKEN",
    "DATASETS_ENV",
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
