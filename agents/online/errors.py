"""Errors of the online router: unknown decisions, conflicting feedback, refused policy swaps, a store that
cannot serve (or whose server is unreachable) and a stale log.

All derive from :class:`routing_env.errors.RoutingEnvError`, so callers can catch every routing-env error at once;
the HTTP service maps them to 404, 409, 409 and 503 (:class:`StoreUnavailableError` is a :class:`StoreError`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from routing_env.errors import RoutingEnvError

if TYPE_CHECKING:
    from agents.online.stores.base import Feedback


class DecisionNotFoundError(RoutingEnvError, LookupError):
    """A decision id that the store has never issued (HTTP 404)."""


class DecisionConflictError(RoutingEnvError, ValueError):
    """The decision is already closed: a second feedback, an observe after the cascade ended, or feedback after
    the wait time expired and the default reward was applied (HTTP 409)."""


class ContractChangeError(RoutingEnvError, ValueError):
    """A hot swap would change what requests must carry (features or a prompt, the feature width, the models or
    the kind of decision); refused unless forced (HTTP 409)."""


class StoreError(RoutingEnvError, RuntimeError):
    """The decision store cannot read or write (read-only file system, disk full, I/O error); nothing of the
    request was committed (HTTP 503)."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The decision store's server cannot be reached or refused the operation (down, restarting, read-only).

    The operation was not acknowledged: it was not committed, or — when the connection broke during the commit —
    its outcome is unknown until the store is read again. The store reconnects on a later call once the server is
    back (HTTP 503).
    """


class LogConflictError(RoutingEnvError, RuntimeError):
    """A writer expected to append to the store's log at a position another writer took first: its view of the log
    is stale, so nothing was written (resynchronise with the store before writing again)."""


def already_closed(
    decision_id: str, feedback: Feedback | None, pending: bool, timeout_s: float | None
) -> DecisionConflictError:
    """The 409 for feedback on a closed decision: what closed it (its ``feedback``, one still being committed when
    ``pending``, or the wait time ``timeout_s`` when neither)."""
    if feedback is None and pending:
        return DecisionConflictError(
            f"decision {decision_id!r} is already closed: feedback was received; feedback is accepted once "
            "per decision"
        )
    if feedback is None:
        return DecisionConflictError(f"decision {decision_id!r} expired after {timeout_s} s without feedback")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(feedback.received_at))
    what = "the default reward was applied" if feedback.source == "default" else "feedback was received"
    return DecisionConflictError(
        f"decision {decision_id!r} is already closed: {what} at {when} (quality={feedback.quality}); "
        "feedback is accepted once per decision"
    )
