"""SQLite plumbing shared by the durable stores (expert registry, routing feedback).

Each store keeps a ``schema_version`` table and a list of migrations (SQL scripts); :func:`migrate`
applies the missing ones in order, each in its own ``BEGIN IMMEDIATE`` transaction, so two processes
opening an old database at once do not both migrate it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A short-lived autocommit connection with ``Row`` results, closed on exit."""
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def migrate(db: sqlite3.Connection, migrations: Sequence[str], *, what: str,
            error: type[Exception] = RuntimeError) -> None:
    """Switch on WAL and bring the schema up to ``len(migrations)``.

    Raises:
        error: the database was written by newer code (its version is past the known migrations).
    """
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        db.execute("INSERT INTO schema_version VALUES (0)")
        version = 0
    else:
        version = row[0]
    if version > len(migrations):
        raise error(f"{what} schema version {version} is newer than this code ({len(migrations)})")
    for i in range(version, len(migrations)):
        db.execute("BEGIN IMMEDIATE")
        try:
            current = db.execute("SELECT version FROM schema_version").fetchone()[0]
            if current > i:  # another process migrated meanwhile
                db.execute("COMMIT")
                continue
            for stmt in filter(str.strip, migrations[i].split(";")):
                db.execute(stmt)
            db.execute("UPDATE schema_version SET version = ?", (i + 1,))
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
