"""A throw-away PostgreSQL cluster for the tests and CI: ``initdb`` in a temporary directory, a loopback port.

CI (``.ci/run``) starts one for the whole run and exports its URL::

    eval "$(python -m tests.pg_cluster start DIR)"   # prints: export ROUTING_ENV_TEST_POSTGRES_URL=…
    python -m tests.pg_cluster stop DIR

Without that variable the test fixtures start their own (``tests/pg_fixtures.py``) and skip with
the reason when no server can be started, unless ``ROUTING_ENV_REQUIRE_POSTGRES=1`` (CI), which makes it a failure.
``initdb`` refuses to run as root: as root, the cluster runs as the ``postgres`` user the Debian package creates.

The cluster trades durability for speed (``fsync = off``: it lives as long as the test run). Authentication:
the superuser ``postgres`` needs no password (over the socket and loopback); every other role needs its password
over TCP (SCRAM), so tests can check where a password comes from.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

URL_ENV = "ROUTING_ENV_TEST_POSTGRES_URL"
REQUIRE_ENV = "ROUTING_ENV_REQUIRE_POSTGRES"
SERVER_USER = "postgres"

_HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class ClusterError(RuntimeError):
    """The cluster could not be created, started or stopped (the message says why)."""


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: from ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        bindir = Path(on_path).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def major(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match.group(1)) if match else 0

    for initdb in sorted(found, key=major, reverse=True):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, dbname: str) -> str:
    """``url`` naming the database ``dbname`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@dataclass
class Cluster:
    """One cluster: its directory (data, log, socket), binaries, port and the OS user running it."""

    root: Path
    bindir: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        """The superuser's URL of the ``postgres`` database (no password needed)."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )

    @classmethod
    def create(cls, root: Path, bindir: Path, port: int) -> Cluster:
        """``initdb`` a new cluster under ``root`` (an empty directory) configured for ``port``."""
        run_as = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise ClusterError(
                    f"initdb refuses to run as root and there is no {SERVER_USER!r} user to run it as"
                ) from None
            os.chown(root, user.pw_uid, user.pw_gid)
            run_as = SERVER_USER
        cluster = cls(root, bindir, port, run_as)
        done = cluster._run(
            "initdb", "-D", str(cluster.data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        if done.returncode != 0:
            raise ClusterError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "fsync = off\nfull_page_writes = off\nsynchronous_commit = on\ntrack_commit_timestamp = on\n"
            "max_connections = 200\nshared_buffers = 32MB\nlog_min_messages = warning\n"
        )
        for name, text, mode in (("postgresql.conf", conf, "a"), ("pg_hba.conf", _HBA, "w")):
            with open(cluster.data / name, mode) as f:
                f.write(text)
        (root / "cluster.json").write_text(
            json.dumps({"bindir": str(bindir), "port": port, "run_as": run_as})
        )
        return cluster

    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster :meth:`create` made under ``root``."""
        meta = json.loads((root / "cluster.json").read_text())
        return cls(root, Path(meta["bindir"]), int(meta["port"]), meta["run_as"])

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ClusterError(f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()} {tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions; ``immediate``: like a crash)."""
        if self.running():
            done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            if done.returncode != 0 and self.running():
                raise ClusterError(f"pg_ctl stop failed ({done.returncode}): {done.stderr.strip()}")

    def running(self) -> bool:
        return self.data.is_dir() and self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def destroy(self) -> None:
        """Stop the server and remove the cluster's directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(root: Path | None = None) -> Cluster:
    """Create and start a cluster on a free loopback port (a new temporary directory unless ``root``).

    Raises:
        ClusterError: no PostgreSQL binaries, or the server would not start (three ports tried).
    """
    bindir = find_bindir()
    if bindir is None:
        raise ClusterError(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin "
            "(install the Debian package postgresql, or set " + URL_ENV + ")"
        )
    error: ClusterError | None = None
    for _ in range(3):
        # Not under pytest's tmp_path: its parents are private to the test user, and the server may run as another.
        base = Path(tempfile.mkdtemp(prefix="routing-env-pg-")) if root is None else root
        cluster: Cluster | None = None
        try:
            cluster = Cluster.create(base, bindir, free_port())
            cluster.start()
            return cluster
        except (ClusterError, OSError, subprocess.SubprocessError) as exc:
            error = exc if isinstance(exc, ClusterError) else ClusterError(str(exc))
            if cluster is not None:
                cluster.destroy()
            elif root is None:
                shutil.rmtree(base, ignore_errors=True)
            if root is not None:
                break
    assert error is not None
    raise error


def wait_until_accepting(url: str, timeout_s: float = 30.0) -> None:
    """Return once ``url`` accepts a connection (``ClusterError`` after ``timeout_s``)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise ClusterError(f"the server at {url} did not accept connections: {exc}") from None
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pg_cluster start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1])
    if argv[0] == "start":
        cluster = start_cluster(root)
        print(f"export {URL_ENV}={cluster.url}")
    elif (root / "cluster.json").exists():
        Cluster.load(root).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
