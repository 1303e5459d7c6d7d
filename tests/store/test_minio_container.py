"""The same store against a real MinIO (the cluster's kind of S3), through testcontainers; skipped without Docker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kai_flows.store import ArtifactStore, S3Config


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # no socket, no daemon, no permission: all mean "no Docker engine here"
        return False
    return True


pytestmark = pytest.mark.skipif(not docker_available(), reason="no Docker engine reachable for testcontainers")


def test_round_trip_on_minio(tmp_path: Path) -> None:
    from testcontainers.minio import MinioContainer

    with MinioContainer() as minio:
        conf = minio.get_config()
        store = ArtifactStore(
            S3Config(
                endpoint=conf["endpoint"], access_key=conf["access_key"], secret_key=conf["secret_key"], bucket="kai"
            )
        )
        store.ensure_bucket()
        src = tmp_path / "src"
        (src / "nested").mkdir(parents=True)
        (src / "nested" / "data.bin").write_bytes(os.urandom(6 << 20))
        (src / "empty").write_bytes(b"")
        store.upload(src, "wf/wf-step-1/out")
        assert store.exists("wf/wf-step-1/out")
        store.download("wf/wf-step-1/out", tmp_path / "dst")
        assert (tmp_path / "dst" / "nested" / "data.bin").read_bytes() == (src / "nested" / "data.bin").read_bytes()
        assert (tmp_path / "dst" / "empty").read_bytes() == b""
