"""Engine fixtures: one real SeaweedFS for the session, a fresh bucket and cache folder per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kai_flows.engine import RunResult, run_pipeline
from kai_flows.store import ArtifactStore, EmbeddedSeaweedFS


@pytest.fixture
def store(seaweed_server: EmbeddedSeaweedFS) -> ArtifactStore:
    return seaweed_server.store(f"engine-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def run(store: ArtifactStore, tmp_path: Path) -> Callable[..., RunResult]:
    """`run(doc, **kwargs)`: run_pipeline on this test's bucket and cache, output under tmp_path/out."""

    def _run(doc: Any, **kwargs: Any) -> RunResult:
        kwargs.setdefault("out", tmp_path / "out")
        kwargs.setdefault("cache", tmp_path / "cache")
        kwargs.setdefault("progress", False)
        return run_pipeline(doc, store=store, **kwargs)

    return _run
