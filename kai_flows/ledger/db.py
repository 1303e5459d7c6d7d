"""Connecting to the ledger's PostgreSQL with errors a person can act on."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from kai_flows.ledger.errors import DatabaseUnavailable

CONNECT_TIMEOUT_S = 5


def describe(database_url: str) -> str:
    """`user@host:port/dbname` without the password, for messages."""
    try:
        info = conninfo_to_dict(database_url)
    except psycopg.Error:
        return "<unparseable database URL>"
    host = info.get("host") or "localhost"
    return f"{info.get('user') or '<default user>'}@{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _reason(err: psycopg.Error) -> str:
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL:  role "x" does not exist'
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reason = first.rsplit("failed: ", 1)[-1]
    return " ".join(reason.replace("FATAL:", "").split())


def connect(database_url: str, *, autocommit: bool = True) -> psycopg.Connection:
    """An autocommit connection returning dict rows; DatabaseUnavailable names where and why it failed."""
    try:
        conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as e:
        raise DatabaseUnavailable(f"invalid database URL: {_reason(e)}") from None
    try:
        return psycopg.connect(
            database_url, autocommit=autocommit, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.OperationalError as e:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL {describe(database_url)}: {_reason(e)}") from None
