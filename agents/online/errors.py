"""Errors of the online router: unknown decisions, conflicting feedback, an unreachable store and a stale log.

All derive from :class:`routing_env.errors.RoutingEnvError`, so callers can catch every routing-env error at once;
the HTTP service maps the first two to 404 and 409.
"""

from __future__ import annotations

from routing_env.errors import RoutingEnvError


class DecisionNotFoundError(RoutingEnvError, LookupError):
    """A decision id that the store has never issued (HTTP 404)."""


class DecisionConflictError(RoutingEnvError, ValueError):
    """The decision is already closed: a second feedback, an observe after the cascade ended, or feedback after
    the wait time expired and the default reward was applied (HTTP 409)."""


class StoreUnavailableError(RoutingEnvError, ConnectionError):
    """The decision store's server cannot be reached or refused the operation (down, restarting, read-only).

    The operation was not acknowledged: it was not committed, or — when the connection broke during the commit —
    its outcome is unknown until the store is read again. The store reconnects on a later call once the server is
    back (HTTP 503).
    """


class LogConflictError(RoutingEnvError, RuntimeError):
    """A writer expected to append to the store's log at a position another writer took first: its view of the log
    is stale, so nothing was written (resynchronise with the store before writing again)."""
