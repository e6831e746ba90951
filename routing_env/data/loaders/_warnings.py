"""How loaders announce what they changed in the data: a :class:`~routing_env.errors.DataWarning` and a note."""

from __future__ import annotations

from routing_env.errors import warn


def announce(where: str, message: str, notes: dict[str, str] | None = None, key: str | None = None) -> None:
    """Warn ``"<where>: <message>"`` (attributed to the loader's caller) and record ``message`` in
    ``notes[key]`` (the dataset's ``meta``) when both are given."""
    warn(f"{where}: {message}", stacklevel=None)
    if notes is not None and key is not None:
        notes[key] = message
