"""A throwaway PostgreSQL cluster on this host: for the tests, the benchmarks and one-host trials.

:class:`LocalPostgres` runs Debian's ``initdb`` into a fresh folder and ``pg_ctl start`` on a free
loopback port (and a unix socket in that folder), with trust authentication for local connections
only; :meth:`LocalPostgres.stop` ends it and deletes the folder. PostgreSQL refuses to run as root,
so under root the cluster belongs to the ``postgres`` system user (``runuser``). This is not how to
run the production database (see docs/deployment.md); it is how a test gets a real one.

Example:
    >>> with LocalPostgres() as pg:
    ...     url = pg.create_schema("t1")    # a URL whose search_path is a fresh schema
    ...     ExpertRegistry(url)
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LocalPostgres", "PostgresNotInstalledError", "postgres_bin"]


class PostgresNotInstalledError(RuntimeError):
    pass


def postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl`` (newest Debian version, or on ``PATH``).

    Raises:
        PostgresNotInstalledError: with the command that installs them.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresNotInstalledError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: run `make setup` "
                                    "(deps/apt.txt lists postgresql) or `apt-get install postgresql`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """Args:
    port: TCP port on 127.0.0.1 (default: a free one).
    """

    def __init__(self, port: int | None = None):
        self.bin = postgres_bin()
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qsef-pg-"))
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        self.started = False

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        full = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.as_root:
            full = ["runuser", "-u", "postgres", "--", *full]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> LocalPostgres:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                         "--no-sync", "--locale=C.UTF-8")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        self.pg_ctl("start")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser (autocommit)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement)

    def create_schema(self, name: str) -> str:
        """A fresh schema ``name`` (dropped first if present); returns a URL whose tables go there."""
        self.sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.sql(f'CREATE SCHEMA "{name}"')
        return f"{self.url}?options=-csearch_path%3D{name}"

    def create_database(self, name: str) -> str:
        """A fresh database ``name`` (dropped first if present); returns its URL."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def pg_ctl(self, action: str) -> None:
        """``stop`` (fast) / ``start`` the same cluster again (fault tests: the database goes away)."""
        if action == "stop":
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        else:
            opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                    "-c fsync=off -c max_connections=200 -c shared_buffers=32MB")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", opts,
                             "-w", "-t", "60", "start")
            if done.returncode:
                log = self.dir / "server.log"
                tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
                raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {tail}")
            self.started = True

    def stop(self) -> None:
        if self.started:
            self.pg_ctl("stop")
        for _ in range(3):
            try:
                shutil.rmtree(self.dir)
                return
            except OSError:
                time.sleep(0.2)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
