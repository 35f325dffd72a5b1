"""The database under the durable stores (expert registry, routing feedback): SQLite or PostgreSQL.

One setting chooses: ``Settings.database_url`` (``QSEF_DATABASE_URL``). Unset, each store keeps its
own SQLite file in the data directory (the embedded default, one host); set to a ``postgresql://``
URL, every store shares that database, so several router workers — on one host or many — see one
registry and one feedback log. Both go through SQLAlchemy Core (psycopg 3 drives PostgreSQL):

    >>> db = Database("postgresql://qsef@db.internal:5432/qsef")     # or Database(tmp_path / "x.sqlite")
    >>> db.migrate({"sqlite": [...], "postgresql": [...]}, store="registry")
    >>> with db.transaction(write=True) as c:
    ...     c.execute(text("UPDATE experts SET cost = :c WHERE name = :n"), {"c": 2.0, "n": "law"})

Transactions: :meth:`Database.transaction` commits on exit and rolls back on an exception, so a
caller acknowledges a write only after it is durable. On SQLite a ``write=True`` transaction starts
with ``BEGIN IMMEDIATE`` (writers queue on the file lock instead of failing half-way); PostgreSQL
runs READ COMMITTED and the stores guard their read-modify-write steps with row locks or unique keys.

Migrations are versioned: each store lists its SQL scripts per dialect, equally long (script *i*
moves the layout from version *i* to *i+1* on either database; never edit one that has shipped).
SQLite files keep their ``schema_version`` table (one row, one store per file); PostgreSQL keeps a
``schema_versions`` table with a row per store, and migrates under an advisory lock, so workers
starting together migrate once.

Failures: a URL that is not PostgreSQL raises :class:`DatabaseConfigError`; a database that cannot
be reached (at start-up or mid-request) raises :class:`DatabaseUnavailableError` naming the setting,
the host and the reason — the CLI prints it as one line, the HTTP app answers 503.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = ["Database", "DatabaseConfigError", "DatabaseUnavailableError", "check_database_url",
           "database_for", "redact_url"]

Dialect = Literal["sqlite", "postgresql"]
_PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_FIX = ("set QSEF_DATABASE_URL to postgresql://USER:PASSWORD@HOST:PORT/DBNAME, or unset it for the "
        "embedded SQLite files")
_MIGRATION_LOCK = 0x51534546  # "QSEF": the advisory lock key that serialises migrations


class DatabaseConfigError(ValueError):
    """``QSEF_DATABASE_URL`` is not a database this project can use."""


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or was lost; nothing of the failed transaction was written."""

    def __init__(self, message: str, *, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def check_database_url(url: str) -> str:
    """``url`` in the form SQLAlchemy wants (``postgresql+psycopg://``).

    Raises:
        DatabaseConfigError: not a PostgreSQL URL, or no host/database in it.
    """
    url = url.strip()
    if not url.startswith(_PG_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise DatabaseConfigError(f"QSEF_DATABASE_URL: unsupported scheme {scheme!r}; {_FIX}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    rest = url.split("://", 1)[1]
    try:
        parsed = make_url("postgresql+psycopg://" + rest)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseConfigError(f"QSEF_DATABASE_URL cannot be parsed ({exc}); {_FIX}") from exc
    if not parsed.database:
        raise DatabaseConfigError(f"QSEF_DATABASE_URL names no database (…/DBNAME at the end); {_FIX}")
    if not parsed.host and not (parsed.query.get("host")):
        raise DatabaseConfigError(f"QSEF_DATABASE_URL names no host; {_FIX}")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: say nothing of it
        return "(unparseable URL)"


class Database:
    """A SQLite file or a PostgreSQL database, with short transactions and versioned migrations.

    Args:
        target: a ``postgresql://`` URL, or the path of a SQLite file (created with its folder).
        pool_size: PostgreSQL connections kept open per process (SQLite opens one per transaction).
    """

    def __init__(self, target: str | Path, *, pool_size: int = 4):
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        text_target = str(target)
        if text_target.startswith(_PG_SCHEMES) or "://" in text_target:
            self.url = check_database_url(text_target)
            self.dialect: Dialect = "postgresql"
            self.path: Path | None = None
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=pool_size, max_overflow=8,
                                        pool_timeout=10, connect_args={"connect_timeout": 5})
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.url = f"sqlite:///{self.path}"
            self.dialect = "sqlite"
            self.engine = create_engine(self.url, poolclass=NullPool,
                                        connect_args={"timeout": 10.0, "check_same_thread": False})

            @event.listens_for(self.engine, "connect")
            def _autocommit_driver(dbapi_conn, _record):  # SQLAlchemy, not the driver, opens transactions
                dbapi_conn.isolation_level = None

            @event.listens_for(self.engine, "begin")
            def _begin(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("qsef_write")
                                     else "BEGIN")

    def describe(self) -> str:
        """Where the data lives, password hidden."""
        return str(self.path) if self.path is not None else redact_url(self.url)

    @property
    def for_update(self) -> str:
        """``" FOR UPDATE"`` on PostgreSQL (lock the rows read before changing them); SQLite's write
        transactions hold the file lock already."""
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator:
        """A connection in one transaction: committed on exit, rolled back on an exception.

        Raises:
            DatabaseUnavailableError: the database cannot be reached, went away, or (SQLite) stayed locked.
        """
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(qsef_write=True)
                with conn.begin():
                    yield conn
        except (OperationalError, InterfaceError) as exc:
            if self.dialect == "sqlite" and not _sqlite_unavailable(exc):
                raise
            raise self._unavailable(exc) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise self._unavailable(exc) from exc
            raise

    def _unavailable(self, exc: Exception) -> DatabaseUnavailableError:
        orig = getattr(exc, "orig", None) or exc
        reason = " ".join(str(orig).split())[:300]
        if self.dialect == "postgresql":
            return DatabaseUnavailableError(
                f"database unavailable: cannot use QSEF_DATABASE_URL={self.describe()} ({reason}); start "
                "PostgreSQL there or fix QSEF_DATABASE_URL", reason=reason)
        return DatabaseUnavailableError(f"database unavailable: {self.describe()} ({reason})", reason=reason)

    def check(self) -> None:
        """Connect once (start-up check). Raises :class:`DatabaseUnavailableError`."""
        from sqlalchemy import text

        with self.transaction() as c:
            c.execute(text("SELECT 1"))

    def migrate(self, migrations: Mapping[str, Sequence[str]], *, store: str,
                error: type[Exception] = RuntimeError) -> int:
        """Bring ``store``'s layout up to date; returns its version.

        Args:
            migrations: ``{"sqlite": [sql, ...], "postgresql": [sql, ...]}``, equally long; a script may
                hold several statements separated by ``;``.
            store: the store's name (its row in PostgreSQL's ``schema_versions``; also in messages).

        Raises:
            error: the database was written by newer code (its version is past the known migrations).
        """
        scripts = migrations[self.dialect]
        if len(scripts) != len(migrations["sqlite"]) or len(scripts) != len(migrations["postgresql"]):
            raise ValueError(f"{store}: the SQLite and PostgreSQL migrations must be equally many")
        if self.dialect == "sqlite":
            return self._migrate_sqlite(scripts, store, error)
        return self._migrate_postgresql(scripts, store, error)

    def _migrate_sqlite(self, scripts: Sequence[str], store: str, error: type[Exception]) -> int:
        from sqlalchemy import text

        raw = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:  # journal_mode cannot change inside a transaction, and the WAL setting persists in the file
            raw.execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
        with self.transaction(write=True) as c:
            c.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
            row = c.execute(text("SELECT version FROM schema_version")).first()
            if row is None:
                c.execute(text("INSERT INTO schema_version VALUES (0)"))
            version = 0 if row is None else row[0]
        _check_version(version, len(scripts), store, error)
        for i in range(version, len(scripts)):
            with self.transaction(write=True) as c:  # one step each, re-checked under the write lock
                if c.execute(text("SELECT version FROM schema_version")).scalar_one() > i:
                    continue  # another process migrated meanwhile
                _run_script(c, scripts[i])
                c.execute(text("UPDATE schema_version SET version = :v"), {"v": i + 1})
        return max(version, len(scripts))

    def _migrate_postgresql(self, scripts: Sequence[str], store: str, error: type[Exception]) -> int:
        from sqlalchemy import text

        with self.transaction(write=True) as c:  # PostgreSQL's DDL is transactional: all steps or none
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            c.execute(text("CREATE TABLE IF NOT EXISTS schema_versions "
                           "(store TEXT PRIMARY KEY, version INTEGER NOT NULL)"))
            version = c.execute(text("SELECT version FROM schema_versions WHERE store = :s"), {"s": store}).scalar()
            if version is None:
                c.execute(text("INSERT INTO schema_versions VALUES (:s, 0)"), {"s": store})
                version = 0
            _check_version(version, len(scripts), store, error)
            for i in range(version, len(scripts)):
                _run_script(c, scripts[i])
            c.execute(text("UPDATE schema_versions SET version = :v WHERE store = :s"),
                      {"v": max(version, len(scripts)), "s": store})
        return max(version, len(scripts))

    def schema_version(self, store: str) -> int:
        from sqlalchemy import text

        with self.transaction() as c:
            if self.dialect == "sqlite":
                return int(c.execute(text("SELECT version FROM schema_version")).scalar_one())
            return int(c.execute(text("SELECT version FROM schema_versions WHERE store = :s"),
                                 {"s": store}).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def database_for(url: str | None, sqlite_path: str | Path) -> Database:
    """The store's database: the shared PostgreSQL one when ``url`` is set, else its own SQLite file."""
    return Database(url) if url else Database(sqlite_path)


def _check_version(version: int, known: int, store: str, error: type[Exception]) -> None:
    if version > known:
        raise error(f"{store} schema version {version} is newer than this code ({known})")


def _run_script(conn, script: str) -> None:
    for stmt in filter(str.strip, script.split(";")):
        conn.exec_driver_sql(stmt)


def _sqlite_unavailable(exc: Exception) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "locked" in msg or "unable to open" in msg or "disk i/o" in msg
