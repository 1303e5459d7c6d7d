"""Downloading a finished workflow's outputs from a real S3 server (the embedded SeaweedFS), objects laid out
as Argo's executor writes them with `archive: none` (one object per file; a directory is a prefix)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from minio import Minio

from kai_flows.store import S3Config
from kai_flows.submit import SubmitError, Submitter, parse_status
from kai_flows.submit.download import download_artifacts, s3_config_from_env


@pytest.fixture
def bucket(seaweed_server) -> tuple[S3Config, Minio]:
    config = seaweed_server.config(f"dl-{uuid.uuid4().hex[:10]}")
    client = Minio(config.endpoint, access_key=config.access_key, secret_key=config.secret_key, secure=False)
    client.make_bucket(config.bucket)
    return config, client


def _put(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def _workflow(bucket_name: str | None) -> dict:
    outputs = {"artifacts": [
        {"name": "report", "s3": {"key": "wf-1/wf-1-aggregate-1/report.json"}},
        {"name": "sparse", "s3": {"key": "wf-1/wf-1-poses-2/sparse"}},
    ]}
    return {"metadata": {"name": "wf-1", "namespace": "kai-ml"}, "status": {
        "phase": "Succeeded",
        "artifactRepositoryRef": {"artifactRepository": {"s3": {"bucket": bucket_name}}} if bucket_name else {},
        "nodes": {"a": {"id": "a", "name": "wf-1.aggregate", "displayName": "aggregate", "type": "Pod",
                        "phase": "Succeeded", "outputs": {"artifacts": outputs["artifacts"][:1]}},
                  "b": {"id": "b", "name": "wf-1.poses", "displayName": "poses", "type": "Pod",
                        "phase": "Succeeded", "outputs": {"artifacts": outputs["artifacts"][1:]}}}}}


def test_download_files_and_directories(bucket, tmp_path: Path) -> None:
    config, client = bucket
    _put(client, config.bucket, "wf-1/wf-1-aggregate-1/report.json", b'{"verdict":"proceed"}')
    _put(client, config.bucket, "wf-1/wf-1-poses-2/sparse/cameras.bin", b"\x01\x02")
    _put(client, config.bucket, "wf-1/wf-1-poses-2/sparse/0/points3D.bin", b"\x03" * 1000)
    status = parse_status(_workflow(config.bucket))
    paths = Submitter(templates_dir=tmp_path).download(status, tmp_path / "out", config=config)
    assert paths == [tmp_path / "out" / "aggregate" / "report", tmp_path / "out" / "poses" / "sparse"]
    assert paths[0].read_bytes() == b'{"verdict":"proceed"}'
    assert (paths[1] / "cameras.bin").read_bytes() == b"\x01\x02"
    assert (paths[1] / "0" / "points3D.bin").read_bytes() == b"\x03" * 1000
    # only the pipeline's declared outputs, when asked
    only = Submitter(templates_dir=tmp_path).download(status, tmp_path / "only", config=config,
                                                      outputs={"report": "aggregate.report"})
    assert only == [tmp_path / "only" / "aggregate" / "report"]
    # never overwrites
    with pytest.raises(SubmitError, match="artifact aggregate.report: .*already exists; not overwriting it"):
        download_artifacts(status.artifacts, tmp_path / "out", config)


def test_missing_object_leaves_nothing_behind(bucket, tmp_path: Path) -> None:
    config, _ = bucket
    status = parse_status(_workflow(None))  # no bucket in the status: KAI_S3_BUCKET's is used
    with pytest.raises(SubmitError, match=rf"artifact aggregate.report: s3://{config.bucket}/wf-1/wf-1-aggregate-1/"
                                          "report.json: no such object or folder"):
        download_artifacts(status.artifacts, tmp_path / "out", config)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    assert list((tmp_path / "out" / "aggregate").iterdir()) == []  # no staging folder left


def test_wrong_credentials(bucket, tmp_path: Path) -> None:
    config, _ = bucket
    bad = config.model_copy(update={"secret_key": "wrong"})
    with pytest.raises(SubmitError, match=r"artifact aggregate.report: S3 at 127\.0\.0\.1:\d+ refused the credentials "
                                          r"\((SignatureDoesNotMatch|AccessDenied)\)"):
        download_artifacts(parse_status(_workflow(config.bucket)).artifacts, tmp_path / "out", bad)


def test_s3_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAI_S3_ENDPOINT", "KAI_S3_ACCESS_KEY", "KAI_S3_SECRET_KEY", "KAI_S3_BUCKET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SubmitError, match="cannot download outputs: set KAI_S3_ENDPOINT"):
        s3_config_from_env()
    monkeypatch.setenv("KAI_S3_ENDPOINT", "http://minio:9000")
    with pytest.raises(SubmitError, match="cannot download outputs: .*KAI_S3_ACCESS_KEY"):
        s3_config_from_env()
    for var, value in (("KAI_S3_ACCESS_KEY", "a"), ("KAI_S3_SECRET_KEY", "b"), ("KAI_S3_BUCKET", "kai-artifacts")):
        monkeypatch.setenv(var, value)
    config = s3_config_from_env()
    assert (config.endpoint, config.secure, config.bucket) == ("minio:9000", False, "kai-artifacts")
