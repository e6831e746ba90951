"""Which policy directories ``POST /v1/policy`` may load, checked before the loader reads a byte.

The path must name a directory inside the service's policy root (resolved, so ``..`` and symlinks cannot leave
it), every file under it must stay inside the root too (a symlinked ``arrays.npz`` pointing at ``/etc`` is
refused), and the directory must be small enough: files on disk plus the arrays' sizes as their ``.npy`` headers
declare them (a zip bomb is refused from its headers, never decompressed). Messages about paths outside the root
never say whether they exist.
"""

from __future__ import annotations

import os
from pathlib import Path

from routing_env.errors import ConfigurationError, PolicyFormatError
from routing_env.policy import PolicyLimits, npz_members


def policy_dir(given: str, root: Path | None, max_bytes: int) -> Path:
    """The directory ``given`` names, checked (see the module docstring).

    Raises:
        ConfigurationError: a NUL byte, a path outside ``root`` (or reaching out of it), not a directory.
        PolicyFormatError: the directory (with its declared array sizes) exceeds ``max_bytes``, or an archive in
            it is malformed.
    """
    if "\x00" in given:
        raise ConfigurationError("path must not contain a NUL byte")
    try:
        path = Path(given).resolve()
    except (OSError, RuntimeError):  # a symlink loop: say no more than for any other bad path
        raise ConfigurationError(f"path {given!r} is not a saved policy directory on the server") from None
    if root is not None and not path.is_relative_to(root):
        raise ConfigurationError(f"path {given!r} is outside the policy root {str(root)!r}")
    if not path.is_dir():
        raise ConfigurationError(f"path {given!r} is not a saved policy directory on the server")
    limits = PolicyLimits(max_array_bytes=max_bytes, max_total_bytes=max_bytes)
    total = 0
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree: walked once is enough
            dirnames.clear()
            continue
        seen.add(real)
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            if root is not None and entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ConfigurationError(
                    f"path {given!r} holds {entry.relative_to(path)!s}, a link that leads outside the policy root"
                )
        for name in filenames:
            entry = Path(dirpath) / name
            if not entry.is_file():
                continue
            total += entry.stat().st_size
            if name.endswith(".npz"):
                total += sum(a.nbytes for a in npz_members(entry, limits).values())
            if total > max_bytes:
                raise PolicyFormatError(
                    f"the policy directory {given!r} holds more than the {max_bytes}-byte limit (files and their "
                    "declared array sizes); raise --max-policy-mb to load it"
                )
    return path
