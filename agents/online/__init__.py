"""The online router: route → decision id → (delayed) feedback → online update, durable in a decision store.

- :class:`OnlineRouter` serves a policy (or a cascade policy), logs every decision with its propensity and learns
  from feedback; :meth:`OnlineRouter.restore` resumes after a crash with a bit-identical policy.
- :class:`DecisionStore` is the protocol of its durable log; :class:`SQLiteDecisionStore` (SQLite in WAL mode) is
  the default implementation, :class:`PostgresDecisionStore` keeps the log in PostgreSQL (the ``postgres`` extra,
  imported only when such a store opens), and :func:`open_store` opens the store a path or URL names.
  ``export()`` gives the traffic in the canonical logged format.
- :class:`BudgetPacer` adapts the cost weight λ online so that spend follows a target (USD per query or per
  hour): ``OnlineRouter(policy, store, pacer=BudgetPacer(target_per_query=0.002))``.
- :func:`create_app` builds the FastAPI service (``routing-env serve``); it needs the ``serve`` extra, which this
  package does not import until the function is called.
- :mod:`agents.online.gateway` is the OpenAI-compatible gateway in front of the router (``routing-env gateway``):
  it calls the models, fails over (:meth:`OnlineRouter.fail_over`), runs cascades and logs every call's cost.
"""

from __future__ import annotations

from typing import Any

from agents.online.config import RouterConfig
from agents.online.errors import (
    DecisionConflictError,
    DecisionNotFoundError,
    StoreUnavailableError,
)
from agents.online.pacing import BudgetConfig, BudgetPacer, PacerState
from agents.online.router import Observation, OnlineRouter
from agents.online.stores import (
    Call,
    Checkpoint,
    Decision,
    DecisionStore,
    Feedback,
    PolicyVersion,
    PostgresDecisionStore,
    SQLiteDecisionStore,
    Step,
    StoreCounts,
    open_store,
)

__all__ = [
    "BudgetConfig",
    "BudgetPacer",
    "Call",
    "Checkpoint",
    "Decision",
    "DecisionConflictError",
    "DecisionNotFoundError",
    "DecisionStore",
    "Feedback",
    "Observation",
    "OnlineRouter",
    "PacerState",
    "PolicyVersion",
    "PostgresDecisionStore",
    "RouterConfig",
    "SQLiteDecisionStore",
    "Step",
    "StoreCounts",
    "StoreUnavailableError",
    "create_app",
    "open_store",
]


def create_app(router: OnlineRouter, **kwargs: Any) -> Any:
    """Build the FastAPI app serving ``router``; see :func:`agents.online.http.app.create_app` for the options.

    Raises:
        ImportError: FastAPI, uvicorn or pydantic is missing (``pip install 'routing-env[serve]'``).
    """
    from agents.online.http.app import create_app as _create_app

    return _create_app(router, **kwargs)
