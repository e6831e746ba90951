"""Checkpoints of the PostgreSQL store: the policy directory's files in the database, a local cache of them.

A router saves its policy into a local staging directory (:meth:`CheckpointArchive.path`); :meth:`add` moves the
files into ``checkpoints`` / ``checkpoint_files`` with a SHA-256 digest and the log position they include, and
:meth:`latest` writes the newest checkpoint back into the cache directory when this process has not got it yet,
so a process on another machine restarts from the database alone.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.online.stores import policy_files
from agents.online.stores.base import Checkpoint
from agents.online.stores.postgres_schema import LOG_CHANNEL
from routing_env.errors import ConfigurationError

Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
# Runs a function of the writer connection in its own committed transaction, after any open group.
Write = Callable[[Callable[[Any], int], str], int]


class CheckpointArchive:
    """The checkpoints of one store.

    Args:
        location: the store's URL without its password, for messages.
        cache_dir: the local directory for staging and cached checkpoints; ``None`` = a private temporary one,
            removed by :meth:`close` (or when the archive is garbage collected).
        keep: how many checkpoints to keep in the database (the newest).
        read: runs a read query (committed data) and returns its rows.
        write: runs ``work(connection)`` in a committed transaction of its own and returns its result; the second
            argument names the policy version, for the error when it is not recorded.
    """

    def __init__(
        self, location: str, cache_dir: str | Path | None, keep: int, read: Read, write: Write
    ) -> None:
        self.location = location
        self._dir = None if cache_dir is None else Path(cache_dir)
        self.keep = int(keep)
        self._read = read
        self._write = write
        self._cleanup: weakref.finalize | None = None

    @property
    def dir(self) -> Path:
        """The cache directory; a private one is made on first use (a store that never checkpoints makes none)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="routing-env-checkpoints-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        return self._dir

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def path(self, version: str, last_feedback_seq: int) -> Path:
        """A new staging directory for a checkpoint of ``version`` holding feedback up to ``last_feedback_seq``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
        return self.dir / "staging" / f"{int(last_feedback_seq):012d}-{safe}-{time.time_ns()}"

    def add(self, version: str, path: str | Path, last_feedback_seq: int) -> Checkpoint:
        """Store the files of the saved policy directory ``path`` and keep only the :attr:`keep` newest (and every
        swap's).

        Raises:
            ConfigurationError: ``path`` is not a saved policy directory, or ``last_feedback_seq`` lies beyond the
                log's head (the checkpoint would claim feedback the store does not have).
        """
        files = policy_files.read_files(path)
        seq = int(last_feedback_seq)
        now = time.time()

        def insert(conn: Any) -> int:
            return self._insert(conn, version, seq, files, now, check_head=True)

        return self._finish(self._write(insert, version), version, path, files, now, seq)

    def swap(self, version: str, save: Callable[[int], Path]) -> Checkpoint:
        """Append a swap entry to the log with the policy ``save(position)`` writes as its checkpoint, in one
        transaction that holds the log's head throughout (see
        :meth:`~agents.online.stores.base.DecisionStore.append_swap`)."""
        now = time.time()
        saved: dict[str, Any] = {}

        def append(conn: Any) -> int:
            row = conn.execute("SELECT position FROM log_head FOR UPDATE").fetchone()
            position = int(row[0]) + 1
            path = save(position)
            files = policy_files.read_files(path)
            saved.update(path=path, files=files, position=position)
            ckpt_id = self._insert(conn, version, position, files, now, check_head=False)
            conn.execute("UPDATE log_head SET position = %s", (position,))
            conn.execute(
                "INSERT INTO log (position, kind, appended_at, checkpoint_id) VALUES (%s, 'swap', %s, %s)",
                (position, now, ckpt_id),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, str(position)))
            return ckpt_id

        ckpt_id = self._write(append, version)
        return self._finish(ckpt_id, version, saved["path"], saved["files"], now, saved["position"])

    def get(self, ckpt_id: int) -> Checkpoint | None:
        """Checkpoint ``ckpt_id`` with its files in the cache directory (``None``: no such checkpoint)."""
        rows = self._read(
            "SELECT id, created_at, policy_version, last_feedback_seq, digest FROM checkpoints WHERE id = %s",
            (int(ckpt_id),),
        )
        return self._checkpoint(rows[0]) if rows else None

    def _insert(
        self, conn: Any, version: str, seq: int, files: dict[str, bytes], now: float, *, check_head: bool
    ) -> int:
        """Insert a checkpoint row and its files on ``conn`` and prune the oldest; return its id."""
        digest = policy_files.digest(files)
        row = conn.execute(
            "INSERT INTO checkpoints (created_at, policy_version, last_feedback_seq, digest) "
            "SELECT %s, %s, %s, %s FROM log_head WHERE %s OR %s <= position RETURNING id",
            (now, version, seq, digest, not check_head, seq),
        ).fetchone()
        if row is None:
            head = conn.execute("SELECT position FROM log_head").fetchone()
            raise ConfigurationError(
                f"a checkpoint holding feedback up to log position {seq} cannot be recorded: the log of "
                f"{self.location} ends at {head[0] if head else 0}"
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO checkpoint_files (checkpoint_id, name, data) VALUES (%s, %s, %s)",
                [(row[0], name, data) for name, data in files.items()],
            )
        # A swap's checkpoint stays: a reader that has not reached the swap yet loads it from there.
        conn.execute(
            "DELETE FROM checkpoints WHERE id IN (SELECT c.id FROM checkpoints c WHERE NOT EXISTS "
            "(SELECT 1 FROM log l WHERE l.checkpoint_id = c.id) ORDER BY c.id DESC OFFSET %s)",
            (self.keep,),
        )
        return int(row[0])

    def _finish(
        self, ckpt_id: int, version: str, path: str | Path, files: dict[str, bytes], now: float, seq: int
    ) -> Checkpoint:
        """After the commit: cache the files, drop the staging directory and checkpoints pruned meanwhile."""
        local = self._materialise(ckpt_id, policy_files.digest(files), lambda: files)
        staged = Path(path).resolve()
        if staged.is_relative_to((self.dir / "staging").resolve()):
            shutil.rmtree(staged, ignore_errors=True)
        kept = {_name(int(i), str(d)) for i, d in self._read("SELECT id, digest FROM checkpoints", ())}
        for old in self.dir.glob("[0-9]*-*"):
            if old.is_dir() and old.name not in kept:
                shutil.rmtree(old, ignore_errors=True)
        return Checkpoint(ckpt_id, now, version, str(local), seq)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint, its files in the cache directory, or ``None`` when none was recorded (its path
        does not exist when its files are gone).

        Raises:
            ConfigurationError: its bytes do not match the digest recorded with them.
        """
        ckpt = None
        for _ in range(3):  # a newer checkpoint may prune this one between the two reads
            rows = self._read(
                "SELECT id, created_at, policy_version, last_feedback_seq, digest FROM checkpoints "
                "ORDER BY id DESC LIMIT 1",
                (),
            )
            if not rows:
                return None
            ckpt = self._checkpoint(rows[0])
            if Path(ckpt.path).is_dir():
                break
        return ckpt

    def _checkpoint(self, row: tuple[Any, ...]) -> Checkpoint:
        """The checkpoint of a ``checkpoints`` row, its files in the cache directory; its path does not exist when
        its files are gone (pruned meanwhile): restoring refuses it rather than fall back to an older state."""
        ckpt_id, created_at, version, seq, digest = (
            int(row[0]),
            float(row[1]),
            str(row[2]),
            int(row[3]),
            str(row[4]),
        )

        def fetch() -> dict[str, bytes]:
            found = self._read(
                "SELECT name, data FROM checkpoint_files WHERE checkpoint_id = %s ORDER BY name", (ckpt_id,)
            )
            return {str(name): bytes(data) for name, data in found}

        local = self._materialise(ckpt_id, digest, fetch)
        path = local if local is not None else self.dir / _name(ckpt_id, digest)
        return Checkpoint(ckpt_id, created_at, version, str(path), seq)

    def _materialise(self, ckpt_id: int, digest: str, files: Callable[[], dict[str, bytes]]) -> Path | None:
        """The cached directory of checkpoint ``ckpt_id``, written from ``files()`` when absent (``None``: the
        checkpoint has no files any more)."""
        target = self.dir / _name(ckpt_id, digest)
        if target.is_dir():
            return target
        content = files()
        if not content:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        return policy_files.write_files(target, content, digest, f"checkpoint {ckpt_id} of {self.location}")


def _name(ckpt_id: int, digest: str) -> str:
    return f"{ckpt_id:012d}-{digest[:16]}"
