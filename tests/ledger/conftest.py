"""Each ledger test gets a fresh PostgreSQL database (CREATE DATABASE kai_test_<random>), dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from kai_flows.ledger.db import connect
from kai_flows.ledger.migrate import migrate

ADMIN_URL = os.environ.get("KAI_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {e}")


@pytest.fixture
def database_url() -> Iterator[str]:
    name = f"kai_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    try:
        yield url
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ledger_url(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection]:
    c = connect(ledger_url)
    yield c
    c.close()
