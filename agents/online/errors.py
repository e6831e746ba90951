"""Errors of the online router: unknown decisions and conflicting feedback.

Both derive from :class:`routing_env.errors.RoutingEnvError`, so callers can catch every routing-env error at once;
the HTTP service maps them to 404 and 409.
"""

from __future__ import annotations

from routing_env.errors import RoutingEnvError


class DecisionNotFoundError(RoutingEnvError, LookupError):
    """A decision id that the store has never issued (HTTP 404)."""


class DecisionConflictError(RoutingEnvError, ValueError):
    """The decision is already closed: a second feedback, an observe after the cascade ended, or feedback after
    the wait time expired and the default reward was applied (HTTP 409)."""
