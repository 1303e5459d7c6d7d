"""Ordered SQL migrations, each applied exactly once.

Files are `NNN_name.sql` in one directory. `migrate` takes a session advisory lock (so runners started at once
queue up instead of racing), checks the applied history against the files (a changed or vanished applied file
stops the run), then applies the pending files in order, each in its own transaction together with its
`schema_migrations` row: a failing file rolls back alone and stops the run. Rolling back is a new forward file.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.pq import TransactionStatus

from kai_flows.ledger.db import connect
from kai_flows.ledger.errors import MigrationError

# 'kai_migr' as a bigint: one fixed key that every runner of this project agrees on.
MIGRATION_LOCK_KEY = 0x6B61695F6D696772
LOCK_WAIT = "300s"
NAME_RE = re.compile(r"^(\d{3})_[a-z0-9][a-z0-9_]*\.sql$")

TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    applied_at timestamptz DEFAULT now(),
    checksum text
)
"""


@dataclass(frozen=True)
class MigrationFile:
    name: str
    number: int
    path: Path
    sql: str
    checksum: str  # sha256 of the file's bytes


@dataclass
class MigrationReport:
    directory: Path
    applied: list[str] = field(default_factory=list)  # applied by this run (would be, with dry_run)
    already_applied: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True)
class MigrationState:
    name: str
    state: Literal["applied", "pending", "changed", "missing"]
    applied_at: datetime | None = None


def migrations_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the migration files are: the argument, else $KAI_MIGRATIONS_DIR, else the ones shipped with kai-flows
    (package data: the repository's `migrations/`)."""
    from kai_flows.resources import migrations_dir as shipped

    path = Path(directory) if directory is not None else shipped()
    if not path.is_dir():
        raise MigrationError(f"migrations directory {path} does not exist")
    return path


def discover(directory: str | os.PathLike[str] | None = None) -> list[MigrationFile]:
    """The migration files in order; a misnamed `.sql` file or a repeated number is an error naming them."""
    root = migrations_dir(directory)
    files: dict[int, MigrationFile] = {}
    for path in sorted(root.glob("*.sql")):
        m = NAME_RE.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} does not match NNN_name.sql (e.g. 003_add_index.sql)")
        number = int(m.group(1))
        if number in files:
            raise MigrationError(f"migrations {files[number].name} and {path.name} share the number {m.group(1)}")
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MigrationError(f"migration {path.name} is not UTF-8 text (byte {e.start})") from None
        files[number] = MigrationFile(path.name, number, path, sql, hashlib.sha256(data).hexdigest())
    return [files[n] for n in sorted(files)]


# Statements that begin, end or hand over the runner's transaction; a file's own transaction control would commit
# part of it outside the runner's transaction (and its schema_migrations row). SAVEPOINT and ROLLBACK TO stay inside.
_ENDS_TRANSACTION = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"}


def transaction_control(sql: str) -> tuple[int, str] | None:
    """(line, statement) of the first statement in `sql` that controls the transaction, else None. Strings,
    comments and dollar-quoted bodies (`DO $$ BEGIN ... END $$`, functions) are told apart by sqlparse."""
    import sqlparse
    from sqlparse import tokens as T

    offset = 0
    for stmt in sqlparse.parse(sql):
        text = str(stmt)
        position = offset
        words: list[str] = []
        for tok in stmt.flatten():
            if not words and (tok.is_whitespace or tok.ttype in T.Comment):
                position += len(tok.value)
                continue
            if not tok.is_whitespace and tok.ttype not in T.Comment:
                words.append(tok.normalized.upper())
            if len(words) == 2:
                break
        offset += len(text)
        if not words or (words[0] not in _ENDS_TRANSACTION and words[:2] != ["PREPARE", "TRANSACTION"]):
            continue
        if words[0] == "ROLLBACK" and words[1:2] == ["TO"]:
            continue
        return sql[:position].count("\n") + 1, " ".join(w for w in words if w != ";")
    return None


def _applied(conn: psycopg.Connection) -> dict[str, dict]:
    if conn.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()["t"] is None:
        return {}
    rows = conn.execute("SELECT name, checksum, applied_at FROM schema_migrations ORDER BY id").fetchall()
    return {r["name"]: r for r in rows}


def _check(files: list[MigrationFile], applied: dict[str, dict], directory: Path) -> list[MigrationFile]:
    """Verify the applied history against the files; return the pending files."""
    by_name = {f.name: f for f in files}
    for name, row in applied.items():
        f = by_name.get(name)
        if f is None:
            raise MigrationError(f"applied migration {name} is missing from {directory}")
        if row["checksum"] is not None and row["checksum"] != f.checksum:
            raise MigrationError(
                f"applied migration {name} was changed after it was applied (checksum {row['checksum'][:12]} in the "
                f"database, {f.checksum[:12]} on disk); add a new migration instead"
            )
    pending = [f for f in files if f.name not in applied]
    last = max((by_name[n].number for n in applied), default=-1)
    for f in pending:
        if f.number < last:
            later = next(n for n in applied if by_name[n].number > f.number)
            raise MigrationError(f"pending migration {f.name} sorts before the already applied {later}; renumber it")
    return pending


def _failure(f: MigrationFile, err: psycopg.Error) -> MigrationError:
    diag = err.diag
    message = diag.message_primary or str(err).strip().splitlines()[0]
    where = ""
    if diag.statement_position:
        where = f" at line {f.sql[: int(diag.statement_position)].count(chr(10)) + 1}"
    return MigrationError(f"migration {f.name} failed{where}: {message}; rolled back, later migrations not applied")


def migrate(
    database_url: str, *, directory: str | os.PathLike[str] | None = None, dry_run: bool = False
) -> MigrationReport:
    """Apply the pending migrations in order (or, with dry_run, only say which would be applied)."""
    root = migrations_dir(directory)
    files = discover(root)
    report = MigrationReport(directory=root, dry_run=dry_run)
    with connect(database_url) as conn:
        if dry_run:  # reads only: no lock, no tracking table
            applied = _applied(conn)
            report.already_applied = list(applied)
            report.applied = [f.name for f in _check(files, applied, root)]
            return report
        try:
            conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute("RESET lock_timeout")
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(f"another migration runner held the lock for over {LOCK_WAIT}; try again") from None
        try:
            conn.execute(TRACKING_TABLE)
            applied = _applied(conn)
            report.already_applied = list(applied)
            for name, row in applied.items():  # adopt rows written without a checksum
                if row["checksum"] is None and (f := next((f for f in files if f.name == name), None)):
                    conn.execute("UPDATE schema_migrations SET checksum = %s WHERE name = %s", (f.checksum, name))
            pending = _check(files, applied, root)
            for f in pending:  # all refused before any of them runs
                if found := transaction_control(f.sql):
                    raise MigrationError(
                        f"migration {f.name} line {found[0]}: {found[1]} controls the transaction, which the runner "
                        "owns (each file runs in one transaction with its schema_migrations row); nothing was "
                        "applied: remove it (a file that must run outside a transaction is not supported)")
            for f in pending:
                try:
                    with conn.transaction():
                        if f.sql.strip():
                            # No parameters: psycopg sends the file as one simple query, several statements allowed.
                            conn.execute(f.sql.encode())
                        if conn.info.transaction_status != TransactionStatus.INTRANS:
                            raise MigrationError(
                                f"migration {f.name} ends the runner's transaction itself (COMMIT/ROLLBACK/END): "
                                "what ran before that is committed, the file is not recorded; remove those statements"
                            )
                        conn.execute(
                            "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)", (f.name, f.checksum)
                        )
                except psycopg.Error as e:
                    raise _failure(f, e) from None
                report.applied.append(f.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return report


def status(database_url: str, *, directory: str | os.PathLike[str] | None = None) -> list[MigrationState]:
    """Every migration's state: applied, pending, changed (applied, file edited since) or missing (file gone)."""
    root = migrations_dir(directory)
    files = discover(root)
    with connect(database_url) as conn:
        applied = _applied(conn)
    states: list[MigrationState] = []
    for f in files:
        row = applied.get(f.name)
        if row is None:
            states.append(MigrationState(f.name, "pending"))
        else:
            changed = row["checksum"] is not None and row["checksum"] != f.checksum
            states.append(MigrationState(f.name, "changed" if changed else "applied", row["applied_at"]))
    known = {f.name for f in files}
    states += [MigrationState(n, "missing", r["applied_at"]) for n, r in applied.items() if n not in known]
    return states
