"""The coordinator API against the real PostgreSQL: each test gets a fresh, migrated database (tests/ledger's
fixtures) and a real uvicorn server on a free port, in a thread of the test process."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from kai_flows.policy import load_policy
from kai_flows.service import CoordinatorClient, CoordinatorConfig
from kai_flows.service.api import create_app
from tests.ledger.conftest import conn, database_url, ledger_url  # noqa: F401 - fixtures

sys.path.insert(0, str(Path(__file__).parents[1] / "ledger"))  # fake_runner, as the CLI's --backend finds it

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) before answering {url}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


class ApiServer:
    def __init__(self, url: str, config: CoordinatorConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(url, config, TOKEN, claimer="api-test")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        wait_http(self.url + "/healthz")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def config() -> CoordinatorConfig:
    return CoordinatorConfig.from_policy(load_policy())


@pytest.fixture
def api(ledger_url: str, config: CoordinatorConfig) -> Iterator[ApiServer]:  # noqa: F811
    with ApiServer(ledger_url, config) as server:
        yield server


@pytest.fixture
def client(api: ApiServer) -> Iterator[CoordinatorClient]:
    with CoordinatorClient(api.url, TOKEN) as c:
        yield c
