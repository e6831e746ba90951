"""Exceptions raised by routing-env.

Every error the library raises on bad input derives from :class:`RoutingEnvError`, so callers can catch the whole
family at once. Messages name the argument or column, the offending value and what was expected.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class RoutingEnvError(Exception):
    """Base class of every error routing-env raises on bad input or bad state."""


class SchemaError(RoutingEnvError, ValueError):
    """A logged table does not follow the canonical format (missing column, bad value, duplicate row...)."""


class FileFormatError(SchemaError):
    """A file cannot be read as the format it claims (truncated, corrupt, empty, or another format)."""


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


def warn(message: str, category: type[Warning] = DataWarning, stacklevel: int | None = 3) -> None:
    """Emit a routing-env warning attributed to the caller of the public function.

    ``stacklevel=None`` attributes it to the first caller outside the ``routing_env`` package, however deep the
    helper that warns.
    """
    warnings.warn(message, category, stacklevel=_external_stacklevel() if stacklevel is None else stacklevel)


def _external_stacklevel() -> int:
    """The ``stacklevel`` (as seen from :func:`warn`) of the first frame outside this package."""
    level = 1
    frame = sys._getframe(2)  # the caller of warn(); level 1 is warn() itself
    while frame is not None:
        level += 1
        if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            break
        frame = frame.f_back  # type: ignore[assignment]
    return level
