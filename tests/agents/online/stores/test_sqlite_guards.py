"""The guards around the SQLite store's file: one writer, a write-ahead log whose loss is detected, a bounded
write-ahead log, checkpoint paths that survive a change of working directory, and store errors by kind."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from agents.online import Decision, Feedback, OnlineRouter, SQLiteDecisionStore
from agents.online.errors import DecisionConflictError, StoreError
from routing_env.errors import ConfigurationError
from tests.agents.online.online_policies import FixedPolicy

MODELS = ("a", "b", "c")


def _decision(seq: int) -> Decision:
    return Decision(
        f"d{seq}", seq, None, 0.0, "v1", "route", "a", 0, 1.0, MODELS, np.array([1.0, 0, 0]), np.zeros(3)
    )


def _store(path: Path, **options: object) -> SQLiteDecisionStore:
    store = SQLiteDecisionStore(path, **options)  # type: ignore[arg-type]
    store.record_policy("v1", "test", MODELS, 3, 0.0)
    return store


def test_a_second_writer_is_refused_and_readers_are_not(tmp_path: Path) -> None:
    store = _store(tmp_path / "d.db")
    with pytest.raises(ConfigurationError, match="already open for writing in this process"):
        SQLiteDecisionStore(tmp_path / "d.db")
    reader = SQLiteDecisionStore(tmp_path / "d.db", readonly=True)
    store.insert_decision(_decision(1))
    assert reader.max_decision_seq() == 1
    with pytest.raises(ConfigurationError, match="opened read-only"):
        reader.insert_decision(_decision(2))
    store.close()
    SQLiteDecisionStore(tmp_path / "d.db").close()  # the lock left with the writer


@pytest.mark.parametrize("damage", ["deleted", "truncated", "zeroed"])
def test_a_lost_write_ahead_log_is_detected_on_open(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path / "live" / "d.db", wal_checkpoint_s=None)
    for seq in range(1, 41):
        store.insert_decision(_decision(seq))
    # What a crash leaves on disk (the process dies, nothing is checkpointed): copy the files as they are.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal", ".lock"):
        shutil.copy(str(store.path) + suffix, crashed / ("d.db" + suffix))
    wal = crashed / "d.db-wal"
    assert wal.stat().st_size > 0
    if damage == "deleted":
        wal.unlink()
    elif damage == "truncated":
        with wal.open("r+b") as f:
            f.truncate(wal.stat().st_size // 3)
    else:
        wal.write_bytes(b"\0" * wal.stat().st_size)
    with pytest.raises(
        ConfigurationError, match=r"holds decisions up to seq \d+ .* committed decisions up to seq 40"
    ):
        SQLiteDecisionStore(crashed / "d.db")
    # Undamaged, the same copy opens with everything.
    shutil.copy(str(store.path) + "-wal", wal)
    assert SQLiteDecisionStore(crashed / "d.db").max_decision_seq() == 40


def test_the_write_ahead_log_stays_bounded(tmp_path: Path) -> None:
    store = _store(tmp_path / "d.db", wal_checkpoint_s=None, wal_max_bytes=256 << 10)
    # A reader that keeps reading between writes, as a busy server's request handlers do.
    reader = sqlite3.connect(tmp_path / "d.db")
    largest = 0
    for seq in range(1, 3001):
        store.insert_decision(_decision(seq))
        reader.execute("SELECT COUNT(*) FROM decisions").fetchone()
        largest = max(largest, Path(str(store.path) + "-wal").stat().st_size)
    assert largest < 512 << 10, largest
    assert store.max_decision_seq() == 3000


def test_checkpoint_paths_survive_a_change_of_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dbs").mkdir()
    monkeypatch.chdir(tmp_path)
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), Path("dbs/dur.db"), checkpoint_every=5)
    for _ in range(12):
        router.feedback(router.route([0.0, 0.0, 0.0]).decision_id, 0.5)
    router.store.close()
    with sqlite3.connect(tmp_path / "dbs" / "dur.db") as conn:
        stored = [r[0] for r in conn.execute("SELECT path FROM checkpoints")]
    assert all(p.startswith("dur.db.checkpoints/") for p in stored)  # relative to the database's directory
    monkeypatch.chdir(tmp_path / "dbs")
    restored = OnlineRouter.restore("dur.db", checkpoint_every=5)
    assert len(restored.policy.updates) == 12 and restored.restored is not None
    assert restored.restored.last_feedback_seq == 10 and restored.restored.replayed == 2


def test_a_store_opened_by_a_relative_path_stays_put_when_the_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    store = _store(Path("d.db"))
    store.insert_decision(_decision(1))
    monkeypatch.chdir(tmp_path / "b")
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(store.max_decision_seq()))  # a new reader connection
    reader.start()
    reader.join()
    store.insert_decision(_decision(2))
    assert seen == [1] and store.max_decision_seq() == 2
    assert list((tmp_path / "b").iterdir()) == []  # no empty database beside the new working directory
    store.close()


def test_checkpoint_paths_of_older_stores_are_found_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dbs").mkdir()
    monkeypatch.chdir(tmp_path)
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), Path("dbs/old.db"))
    router.feedback(router.route([0.0, 0.0, 0.0]).decision_id, 0.5)
    router.checkpoint()
    router.store.close()
    with sqlite3.connect(
        tmp_path / "dbs" / "old.db"
    ) as conn:  # as earlier versions recorded it: cwd-relative
        conn.execute("UPDATE checkpoints SET path = 'dbs/' || path")
    monkeypatch.chdir(tmp_path / "dbs")
    assert OnlineRouter.restore("old.db").policy.updates == [(router.policy.updates[0][0], 0.5)]


def test_a_missing_checkpoint_is_refused_not_reset(tmp_path: Path) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db", checkpoint_every=2)
    for _ in range(5):
        router.feedback(router.route([0.0, 0.0, 0.0]).decision_id, 0.5)
    router.store.close()
    shutil.move(tmp_path / "d.db.checkpoints", tmp_path / "elsewhere")
    with pytest.raises(
        ConfigurationError, match=r"which does not exist: serving without it would drop .* 5 applied"
    ):
        OnlineRouter.restore(tmp_path / "d.db")
    SQLiteDecisionStore(tmp_path / "d.db").close()  # the refused restore released the store


def test_uniqueness_violations_are_conflicts(tmp_path: Path) -> None:
    store = _store(tmp_path / "d.db")
    store.insert_decision(_decision(1))
    fb = Feedback(1, "d1", 0.0, "client", 0.5, 0.0, None, 0.5, True, "v1")
    store.insert_feedback(fb)
    with pytest.raises(DecisionConflictError, match="'d1' already has feedback"):
        store.insert_feedback(Feedback(2, "d1", 0.0, "client", 0.5, 0.0, None, 0.5, True, "v1"))
    with pytest.raises(DecisionConflictError, match=r"decision 'd1' \(seq 1\) is already logged"):
        store.insert_decision(_decision(1))


def test_a_failed_write_is_a_store_error(tmp_path: Path) -> None:
    store = _store(tmp_path / "d.db")
    store._writer_conn().execute("PRAGMA query_only=ON")  # every write now fails as on a read-only file
    with pytest.raises(StoreError, match="could not write"):
        store.insert_decision(_decision(1))


def test_a_discarded_deferral_undoes_only_its_own_writes(tmp_path: Path) -> None:
    store = _store(tmp_path / "d.db", wal_checkpoint_s=None)
    store.begin_deferred()
    store.insert_decision(_decision(1))
    group = store.end_deferred()
    store.begin_deferred()
    store.insert_decision(_decision(2))
    assert store.end_deferred(discard=True) is None
    store.commit_group()
    assert group is not None and store.group_error(group) is None
    other = sqlite3.connect(store.path)
    assert [r[0] for r in other.execute("SELECT seq FROM decisions")] == [1]
    store.close()
    # The discarded seq was never committed, so it does not count towards the marks the next open checks.
    assert SQLiteDecisionStore(tmp_path / "d.db").max_decision_seq() == 1


def test_a_read_only_database_is_refused_on_open(tmp_path: Path) -> None:
    _store(tmp_path / "d.db").close()
    # Shadow the file system's answer: the writer's first write fails as it would on a read-only mount.
    conn = sqlite3.connect(tmp_path / "d.db")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    (tmp_path / "d.db").chmod(0o444)
    try:
        probe = sqlite3.connect(tmp_path / "d.db")
        writable = True
        try:
            probe.execute("CREATE TABLE probe (x)")
        except sqlite3.OperationalError:
            writable = False
        probe.close()
        if writable:
            pytest.skip(
                "file permissions do not stop this user (root); the server test covers a read-only mount"
            )
        with pytest.raises(ConfigurationError, match=r"cannot open the store .* for writing"):
            SQLiteDecisionStore(tmp_path / "d.db")
    finally:
        (tmp_path / "d.db").chmod(0o644)
