"""Exceptions raised by routing-env.

Every error the library raises on bad input derives from :class:`RoutingEnvError`, so callers can catch the whole
family at once. Messages name the argument or column, the offending value and what was expected.
"""

from __future__ import annotations

import warnings


class RoutingEnvError(Exception):
    """Base class of every error routing-env raises on bad input or bad state."""


class SchemaError(RoutingEnvError, ValueError):
    """A logged table does not follow the canonical format (missing column, bad value, duplicate row...)."""


class PriceError(SchemaError):
    """A price card is missing, negative, or names a model the data does not have."""


class ConfigurationError(RoutingEnvError, ValueError):
    """An argument of a constructor or function is out of range or inconsistent with the data."""


class ShapeError(RoutingEnvError, ValueError):
    """An array has the wrong shape or width (features of the wrong dimension, wrong number of models...)."""


class ModelMismatchError(RoutingEnvError, ValueError):
    """A policy, dataset or request disagrees about the list of models."""


class PartialInformationError(RoutingEnvError, ValueError):
    """An operation needs the outcome of every model on every query, and the data is partial (bandit logs)."""


class PolicyFormatError(RoutingEnvError, ValueError):
    """A saved policy directory is missing, corrupt, or of an unknown kind."""


class RoutingEnvWarning(UserWarning):
    """Base class of the warnings routing-env emits (data quality, OPE diagnostics...)."""


class DataWarning(RoutingEnvWarning):
    """Something in the data is suspicious but usable (a model without outcomes, ignored columns...)."""


class OPEWarning(RoutingEnvWarning):
    """An off-policy estimate may be unreliable (support violation, tiny propensities, small effective sample)."""


def warn(message: str, category: type[Warning] = DataWarning, stacklevel: int = 3) -> None:
    """Emit a routing-env warning attributed to the caller of the public function."""
    warnings.warn(message, category, stacklevel=stacklevel)
