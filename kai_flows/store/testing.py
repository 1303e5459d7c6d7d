"""Test helpers: a real SeaweedFS for any test suite.

In a ``conftest.py``::

    from kai_flows.store.testing import seaweed_server, store_factory  # noqa: F401  (pytest fixtures)

``seaweed_server`` (session scope) is one running ``EmbeddedSeaweedFS`` on a temporary data directory;
``store_factory`` gives each call an ``ArtifactStore`` on a fresh bucket of that server. Outside pytest,
``running_seaweed(data_dir)`` is the same server as a context manager.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kai_flows.store.s3 import ArtifactStore
from kai_flows.store.seaweed import EmbeddedSeaweedFS


@contextmanager
def running_seaweed(data_dir: Path, **options: object) -> Iterator[EmbeddedSeaweedFS]:
    """Start an embedded SeaweedFS on ``data_dir``; stop it on exit."""
    server = EmbeddedSeaweedFS(data_dir, **options)  # type: ignore[arg-type]
    with server:
        yield server


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweedFS]:
    with running_seaweed(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def store_factory(seaweed_server: EmbeddedSeaweedFS) -> Callable[..., ArtifactStore]:
    """``store_factory(**options)`` -> an ``ArtifactStore`` on a new, empty bucket."""
    counter = itertools.count()

    def make(**options: object) -> ArtifactStore:
        bucket = f"test-{uuid.uuid4().hex[:12]}-{next(counter)}"
        return seaweed_server.store(bucket, **options)

    return make
