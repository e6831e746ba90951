"""What only the PostgreSQL store does, against a real server: versioned migrations, a gap-free commit-ordered log
under concurrent writers in several processes, stale positions refused, LISTEN/NOTIFY on appends, checkpoints as
bytes in the database, the password kept out of every message, and a server that stops and comes back."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.online import DecisionConflictError, DecisionNotFoundError, PostgresDecisionStore, open_store
from agents.online.errors import LogConflictError, StoreUnavailableError
from agents.online.stores import postgres_schema
from agents.online.stores.postgres_schema import LOG_CHANNEL, MIGRATIONS, Migration
from routing_env.errors import ConfigurationError
from tests.agents.online.stores.records import VERSION, decision, feedback, register
from tests.pg_cluster import Cluster, with_database

psycopg = pytest.importorskip("psycopg")

REPO = Path(__file__).resolve().parents[4]


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Wait for ``condition()`` (polling every 10 ms) at most ``timeout_s`` seconds; whether it came true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


# ---------------------------------------------------------------------------------------------------- migrations
def test_the_schema_is_migrated_once_at_start_up_and_never_again(postgres_url: str) -> None:
    stores: list[PostgresDecisionStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresDecisionStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]  # replicas starting together
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == 4
    rows = _sql(postgres_url, "SELECT version, name, checksum FROM schema_migrations")
    assert rows == [(m.version, m.name, m.checksum) for m in MIGRATIONS]
    for s in stores:
        s.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert postgres_schema.migrate(conn) == []  # a restart applies nothing


def test_a_schema_from_a_newer_or_edited_routing_env_is_refused(postgres_url: str) -> None:
    PostgresDecisionStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        edited = (Migration(1, MIGRATIONS[0].name, MIGRATIONS[0].sql + "\n-- edited"), *MIGRATIONS[1:])
        with pytest.raises(ConfigurationError, match="migrations must never change once applied"):
            postgres_schema.migrate(conn, edited)
        later = len(MIGRATIONS) + 1
        newer = (*MIGRATIONS, Migration(later, "later", "CREATE TABLE later (x INTEGER)"))
        assert postgres_schema.migrate(conn, newer) == [later]
    with pytest.raises(
        ConfigurationError, match=rf"migrations \[{later}\] that this routing-env does not know"
    ):
        PostgresDecisionStore(postgres_url)


def test_durable_modes_never_run_with_synchronous_commit_off(postgres_url: str) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    _sql(postgres_url, f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')  # a server tuned for speed
    for mode, expected in (("NORMAL", "on"), ("FULL", "on"), ("OFF", "off")):
        with PostgresDecisionStore(postgres_url, synchronous=mode) as s:
            assert s._writer_conn().execute("SHOW synchronous_commit").fetchone() == (expected,)
    _sql(postgres_url, f'ALTER DATABASE "{dbname}" SET synchronous_commit = remote_apply')
    with PostgresDecisionStore(postgres_url) as s:  # a stronger setting is kept
        assert s._writer_conn().execute("SHOW synchronous_commit").fetchone() == ("remote_apply",)
    with pytest.raises(ConfigurationError, match="synchronous must be 'OFF', 'NORMAL', 'FULL' or 'EXTRA'"):
        PostgresDecisionStore(postgres_url, synchronous="SOMETIMES")


# ---------------------------------------------------------------------------------------------------- the log
def test_concurrent_writers_get_gap_free_positions_in_commit_order(postgres_url: str) -> None:
    workers, per_worker = 4, 500
    with open_store(postgres_url) as s:
        register(s)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.agents.online.stores.records",
                "append",
                postgres_url,
                str(w),
                str(per_worker),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(1, workers + 1)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # all start appending together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * workers
    appends = np.array([[float(v) for v in line.split()] for out in outputs for line in out.split()], ndmin=2)
    appends = appends.reshape(-1, 3)
    n = workers * per_worker
    positions = appends[:, 0].astype(np.int64)
    assert sorted(positions.tolist()) == list(range(1, n + 1))  # gap-free, each position once
    # Commit order: when one append returned before another began, it has the lower position. (Positions sorted;
    # each append's start must precede the earliest end among the appends above it.)
    by_position = appends[np.argsort(positions)]
    earliest_end_above = np.minimum.accumulate(by_position[::-1, 2])[::-1]
    assert (by_position[:-1, 1] < earliest_end_above[1:]).all()
    # And by the server's own commit timestamps, when it records them.
    if _sql(postgres_url, "SHOW track_commit_timestamp")[0][0] == "on":
        stamps = _sql(postgres_url, "SELECT pg_xact_commit_timestamp(xmin) FROM log ORDER BY position")
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(stamps))
    # The log and the feedback agree: one feedback per entry, every decision closed.
    assert _sql(postgres_url, "SELECT COUNT(*), COUNT(DISTINCT decision_id) FROM log") == [(n, n)]
    assert _sql(postgres_url, "SELECT COUNT(*) FROM decisions WHERE status = 'closed'") == [(n,)]


def test_a_stale_expected_position_writes_nothing(postgres_url: str) -> None:
    with open_store(postgres_url) as s:
        register(s)
        for seq in (1, 2, 3):
            s.insert_decision(decision(seq))
        assert s.insert_feedback(feedback(decision(1), 1)) == 1
        with pytest.raises(
            LogConflictError, match="expected to append at log position 5, but the log already ends at 1"
        ):
            s.insert_feedback(feedback(decision(2), 5))
        assert s.get_feedback(decision(2).decision_id) is None and s.log_position() == 1
        assert s.get_decision(decision(2).decision_id).status == "open"
        assert s.insert_feedback(feedback(decision(2), 0)) == 2  # 0: wherever the log is
        with pytest.raises(ConfigurationError, match="feedback seq must be ≥ 0"):
            s.insert_feedback(feedback(decision(3), -1))


def test_appends_notify_their_positions_on_commit_only(postgres_url: str) -> None:
    listener = psycopg.connect(postgres_url, autocommit=True)
    listener.execute(f"LISTEN {LOG_CHANNEL}")
    with open_store(postgres_url) as s:
        register(s)
        for seq in (1, 2, 3):
            s.insert_decision(decision(seq))
        s.insert_feedback(feedback(decision(1), 1))
        s.begin_deferred()
        s.insert_feedback(feedback(decision(2), 2))
        group = s.end_deferred()
        assert list(listener.notifies(timeout=0.3)) != []  # position 1
        assert list(listener.notifies(timeout=0.3)) == []  # position 2 is not committed yet
        s.commit_group()
        assert s.group_error(group) is None
        s.insert_feedback(feedback(decision(3), 3))
        got = [int(n.payload) for n in listener.notifies(timeout=0.5, stop_after=2)]
        assert got == [2, 3]
    listener.close()


class FailingCommit(PostgresDecisionStore):
    """Fails the next ``fail`` group commits, as a lost connection would."""

    fail = 0

    def _commit_sql(self, conn: Any) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise psycopg.OperationalError("connection lost (injected)")
        super()._commit_sql(conn)


def test_a_failed_group_gives_its_positions_back(postgres_url: str) -> None:
    s = FailingCommit(postgres_url)
    register(s)
    for seq in range(1, 5):
        s.insert_decision(decision(seq))
    s.insert_feedback(feedback(decision(1), 1))
    s.begin_deferred()
    s.insert_decision(decision(9))
    s.insert_feedback(feedback(decision(2), 2))
    s.insert_feedback(feedback(decision(3), 3))
    group = s.end_deferred()
    s.fail = 1
    s.commit_group()
    error = s.group_error(group)
    assert isinstance(error, StoreUnavailableError) and "could not commit" in str(error)
    assert s.log_position() == 1 and s.max_decision_seq() == 4  # nothing of the group is stored
    assert s.insert_feedback(feedback(decision(4), 2)) == 2  # its positions are free again
    s.close()


def test_text_postgresql_cannot_hold_is_refused_before_it_reaches_the_server(postgres_url: str) -> None:
    import dataclasses

    with open_store(postgres_url) as s:
        register(s)
        s.insert_decision(decision(1))
        s.begin_deferred()
        s.insert_feedback(feedback(decision(1), 1))
        with pytest.raises(ConfigurationError, match=r"prompt contains a NUL character .* remove it"):
            s.insert_decision(dataclasses.replace(decision(2), prompt="a\x00b"))
        with pytest.raises(ConfigurationError, match="request_id contains a NUL character"):
            s.insert_decision(decision(3, request_id="r\x00"))
        group = s.end_deferred()
        s.commit_group()
        assert s.group_error(group) is None and s.log_position() == 1  # the group was not spoilt
        assert s.find_request("r\x00") is None and s.get_feedback("d\x00") is None
        with pytest.raises(DecisionNotFoundError):
            s.get_decision("d000001\x00")
        with pytest.raises(ConfigurationError, match="version contains a NUL"):
            s.record_policy("v\x00", "k", ("a",), 1, 0.0)


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_live_in_the_database_and_damage_is_detected(postgres_url: str, tmp_path: Path) -> None:
    from tests.agents.online.online_policies import FixedPolicy

    s = open_store(postgres_url)
    register(s)
    with open_store(postgres_url) as idle:  # a store that never checkpoints leaves nothing on disk
        assert idle.latest_checkpoint() is None and idle._checkpoints._dir is None
    path = s.checkpoint_path(VERSION, 0)
    FixedPolicy(("small", "medium", "large"), [0.2, 0.3, 0.5], n_features=4).save(path)
    ckpt = s.add_checkpoint(VERSION, path, 0)
    assert not path.exists()  # staged files moved into the database
    names = _sql(postgres_url, "SELECT name FROM checkpoint_files WHERE checkpoint_id = %s", (ckpt.id,))
    assert sorted(n for (n,) in names) == ["arrays.npz", "policy.json"]
    with pytest.raises(ConfigurationError, match="feedback up to log position 7 cannot be recorded: the log"):
        s.add_checkpoint(VERSION, ckpt.path, 7)
    cache = s.checkpoint_dir
    s.close()
    assert not cache.exists()  # the private cache goes with the store
    _sql(postgres_url, "UPDATE checkpoint_files SET data = 'x' WHERE name = 'policy.json'")
    with open_store(postgres_url) as fresh, pytest.raises(ConfigurationError, match="is damaged"):
        fresh.latest_checkpoint()


# ---------------------------------------------------------------------------------------------------- secrets
def test_the_password_comes_from_the_environment_or_pgpass_and_is_never_shown(
    postgres_server: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "s3cr3t-Pa55"
    _sql(postgres_server, f"CREATE ROLE alice_{os.getpid()} LOGIN PASSWORD '{password}'")
    user = f"alice_{os.getpid()}"
    dbname = postgres_url.rsplit("/", 1)[1]
    _sql(postgres_url, f"GRANT ALL ON SCHEMA public TO {user}")
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    bare = f"postgresql://{user}@{host_port}/{dbname}"
    try:
        monkeypatch.setenv("PGPASSWORD", password)
        with open_store(bare) as s:
            register(s)
            assert s.location == bare
        monkeypatch.delenv("PGPASSWORD")
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:{user}:{password}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        with open_store(bare) as s:
            assert VERSION in s.policy_versions()
        with open_store(f"postgresql://{user}:{password}@{host_port}/{dbname}") as s:
            assert password not in s.location and password not in repr(s)
        monkeypatch.delenv("PGPASSFILE")
        wrong = f"postgresql://{user}:not-{password}@{host_port}/{dbname}"
        with pytest.raises(StoreUnavailableError, match="password authentication failed") as err:
            open_store(wrong)
        assert f"not-{password}" not in str(err.value)
    finally:
        _sql(postgres_url, f"REVOKE ALL ON SCHEMA public FROM {user}")
        _sql(postgres_url, f"DROP OWNED BY {user}")
        _sql(postgres_server, f"DROP ROLE {user}")


# ---------------------------------------------------------------------------------------------------- outages
def _fresh_database(cluster: Cluster) -> str:
    _sql(cluster.url, "CREATE DATABASE outage")
    return with_database(cluster.url, "outage")


def test_a_server_stopped_mid_write_is_a_clear_error_and_loses_nothing_acknowledged(
    own_cluster: Cluster,
) -> None:
    url = _fresh_database(own_cluster)
    s = PostgresDecisionStore(url, timeout_s=2)
    register(s)
    acked: dict[int, int] = {}  # decision seq → log position acknowledged
    seen: list[type] = []
    stop = threading.Event()

    def write() -> None:
        seq, logged = 1, False
        while not stop.is_set() and seq <= 100_000:
            d = decision(seq)
            try:
                if not logged:
                    s.insert_decision(d)
                    logged = True
                acked[seq] = s.insert_feedback(feedback(d, 0))
                seq, logged = seq + 1, False
            except StoreUnavailableError:
                seen.append(StoreUnavailableError)
                time.sleep(0.05)
            except DecisionConflictError:  # a retried write whose first attempt had committed unacknowledged
                seen.append(DecisionConflictError)
                if logged:
                    seq, logged = seq + 1, False
                else:
                    logged = True
            except Exception as exc:  # anything else is a failure of the test
                seen.append(type(exc))
                raise

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert _until(lambda: len(acked) >= 50, 60)
        own_cluster.stop("immediate")  # like a crash of the database server
        time.sleep(0.5)
        during = len(acked)
        time.sleep(0.5)
        assert len(acked) == during and StoreUnavailableError in seen  # failing, not acknowledging
        with pytest.raises(
            StoreUnavailableError, match=r"postgresql://postgres@127\.0\.0\.1:\d+/outage is unavailable"
        ):
            s.log_position()
        own_cluster.start()
        assert _until(
            lambda: len(acked) >= during + 50, 60
        )  # resumed on the same store, without reopening it
    finally:
        stop.set()
        thread.join(60)
    assert set(seen) <= {StoreUnavailableError, DecisionConflictError}
    head = s.log_position()
    stored = dict(_sql(url, "SELECT d.seq, l.position FROM log l JOIN decisions d USING (decision_id)"))
    assert sorted(stored.values()) == list(range(1, head + 1))  # still gap-free
    assert all(stored.get(seq) == position for seq, position in acked.items())  # nothing acknowledged lost
    s.close()


def test_a_group_commit_without_a_server_fails_and_the_store_recovers(own_cluster: Cluster) -> None:
    url = _fresh_database(own_cluster)
    s = PostgresDecisionStore(url, timeout_s=2)
    register(s)
    s.insert_decision(decision(1))
    s.begin_deferred()
    s.insert_feedback(feedback(decision(1), 1))
    group = s.end_deferred()
    own_cluster.stop("fast")
    s.commit_group()
    assert isinstance(s.group_error(group), StoreUnavailableError)
    own_cluster.start()
    assert s.get_feedback(decision(1).decision_id) is None  # rolled back, and the store reads again
    assert s.insert_feedback(feedback(decision(1), 1)) == 1
    s.close()


# ---------------------------------------------------------------------------------------------------- the service
@pytest.mark.slow
def test_routing_env_serve_on_postgresql_resumes_after_kill_9(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``routing-env serve --store postgresql://…``: the unchanged service, its group commit, and a restart."""
    pytest.importorskip("uvicorn")
    from agents.routers import LinUCB
    from routing_env.data import make_synthetic
    from tests.agents.online.online_policies import assert_same_state
    from tests.agents.online.test_online_server import Server, Traffic, replayed, served_policy

    data = make_synthetic(n_queries=600, models=4, n_features=8, seed=11)
    policy_dir = LinUCB(alpha=0.3, epsilon=0.1, seed=0).fit(data, cost_weight=0.5).save(tmp_path / "linucb")
    user, rest = postgres_url.removeprefix("postgresql://").split("@", 1)
    url = f"postgresql://{user}:hunter2@{rest}"  # accepted and ignored by the test server's trust login
    server = Server(tmp_path / "unused.db", policy_dir, "--checkpoint-every", "50")
    server.args[server.args.index(str(tmp_path / "unused.db"))] = url
    server.log = tmp_path / "serve.log"
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the killed server's checkpoint cache stays in tmp_path
    server.start()
    try:
        traffic = Traffic(server.url, data, clients=4, pairs=None).start()
        reached = _until(lambda: len(traffic.acked) >= 200, 60)
        server.kill()
        traffic.stop.set()
        traffic.join()
        assert reached and set(traffic.statuses) == {200}
        server.start()  # the same command: resumes from the checkpoint in the database + the log after it
        with open_store(postgres_url) as store:
            assert set(traffic.acked) <= {fb.decision_id for fb, _ in store.feedback()}
            assert_same_state(served_policy(server), replayed(policy_dir, store), tmp_path)
    finally:
        server.stop()
    log = server.log.read_text()
    assert "already serves version 'v1'" in log and "hunter2" not in log
