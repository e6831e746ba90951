"""Errors of the online router: unknown decisions, conflicting feedback, refused policy swaps, and a store that
cannot serve.

All derive from :class:`routing_env.errors.RoutingEnvError`, so callers can catch every routing-env error at once;
the HTTP service maps them to 404, 409, 409 and 503.
"""

from __future__ import annotations

from routing_env.errors import RoutingEnvError


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
