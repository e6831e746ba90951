"""A saved policy directory as bytes and back: how a database-backed store keeps its checkpoints.

A policy directory (``policy.json``, ``arrays.npz``, maybe ``featurizer/``) becomes ``{relative POSIX path: bytes}``
with a SHA-256 digest over names and contents; writing it back refuses names that would leave the directory, and
the digest is checked first, so a damaged checkpoint is refused rather than loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from routing_env.errors import ConfigurationError


def read_files(root: str | Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its relative POSIX path, in sorted order.

    Raises:
        ConfigurationError: ``root`` is not a directory, holds no file, or holds a symbolic link (a checkpoint
            must be self-contained).
    """
    base = Path(root)
    if not base.is_dir():
        raise ConfigurationError(f"a checkpoint must be a saved policy directory, got {str(root)!r}")
    files: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if path.is_symlink():
            raise ConfigurationError(f"checkpoint directory {base} holds the symbolic link {rel!r}")
        if path.is_file():
            files[rel] = path.read_bytes()
    if not files:
        raise ConfigurationError(f"checkpoint directory {base} holds no file")
    return files


def digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) over the names, sizes and contents of ``files``, in name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        h.update(name.encode())
        h.update(b"\0%d\0" % len(data))
        h.update(data)
    return h.hexdigest()


def write_files(root: str | Path, files: Mapping[str, bytes], expected_digest: str, what: str) -> Path:
    """Write ``files`` as the directory ``root`` (atomically: a temporary sibling renamed into place).

    An existing ``root`` is kept as it is (it was written from the same bytes). ``what`` names the checkpoint in
    errors.

    Raises:
        ConfigurationError: the files' digest differs from ``expected_digest`` (damaged in storage), or a name is
            absolute or climbs out of the directory.
    """
    target = Path(root)
    if target.is_dir():
        return target
    actual = digest(files)
    if actual != expected_digest:
        raise ConfigurationError(
            f"{what} is damaged: its files hash to {actual[:12]}…, but {expected_digest[:12]}… was recorded; "
            "it cannot be restored"
        )
    for name in files:
        parts = PurePosixPath(name).parts
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ConfigurationError(f"{what} holds the file name {name!r}, which leaves its directory")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        for name, data in files.items():
            path = tmp.joinpath(*PurePosixPath(name).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent writer of the same checkpoint: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
