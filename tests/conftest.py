"""What every suite shares: where the repository, the shared photo sets and Argo's specs are, and one real S3
store (SeaweedFS) for the whole session. Suites import the constants (`from tests.conftest import REPO`) and get
the fixtures by name."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kai_flows.store import ArtifactStore, EmbeddedSeaweedFS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = Path(os.environ.get("KAI_DATASETS") or SHARED / "datasets")  # real photo sets, never copied in
ARGO_SPECS = SHARED / "argo"  # Argo's JSON schema, REST spec and CRDs (v3.7)


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweedFS]:
    """One running embedded SeaweedFS (the real S3 server) on a temporary data folder."""
    with EmbeddedSeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def store_factory(seaweed_server: EmbeddedSeaweedFS) -> Callable[..., ArtifactStore]:
    """`store_factory(**options)` -> an ArtifactStore on a new, empty bucket of the session's server."""
    counter = itertools.count()

    def make(**options: object) -> ArtifactStore:
        return seaweed_server.store(f"test-{uuid.uuid4().hex[:12]}-{next(counter)}", **options)

    return make
