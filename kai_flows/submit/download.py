"""Fetch a workflow's output artifacts from S3 with minio (the project's one S3 client).

Configuration from the environment, as `kai_flows.store.S3Config` reads it: `KAI_S3_ENDPOINT` (host:port, or a
http(s):// URL), `KAI_S3_ACCESS_KEY`, `KAI_S3_SECRET_KEY`, `KAI_S3_BUCKET` (used when an artifact's status names
no bucket), `KAI_S3_REGION` (optional). The objects are Argo's own (no kai-flows manifest), so they are read
directly rather than through `ArtifactStore.download`. An artifact key is one object, or a prefix (a directory
stored with `archive: none`: one object per file under `<key>/`).
Each artifact is downloaded into a hidden folder beside its destination and renamed into place only when complete,
so an interrupted download never leaves a half-written output.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kai_flows.store import S3Config, StoreError
from kai_flows.submit.errors import SubmitError
from kai_flows.submit.status import ArtifactLocation

_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}


def s3_config_from_env() -> S3Config:
    """The KAI_S3_* settings (read by `kai_flows.store.S3Config`, as the local engine reads them)."""
    try:
        config = S3Config.from_env()
    except StoreError as e:
        raise SubmitError(f"cannot download outputs: {e}") from None
    if config is None:
        raise SubmitError("cannot download outputs: set KAI_S3_ENDPOINT, KAI_S3_ACCESS_KEY, KAI_S3_SECRET_KEY "
                          "and KAI_S3_BUCKET")
    return config


def _client(config: S3Config):  # type: ignore[no-untyped-def]
    from minio import Minio

    return Minio(config.endpoint, access_key=config.access_key, secret_key=config.secret_key,
                 secure=config.secure, region=config.region)


def download_artifacts(artifacts: list[ArtifactLocation], dest: Path, config: S3Config | None = None) -> list[Path]:
    """Download each artifact to `dest/<task>/<artifact name>`; returns those paths. Existing ones are refused."""
    import urllib3
    from minio.error import MinioException, S3Error

    config = config or s3_config_from_env()
    client = _client(config)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for art in artifacts:
        bucket = art.bucket or config.bucket
        if not bucket:
            raise SubmitError(f"artifact {art.ref}: the workflow status names no bucket; set KAI_S3_BUCKET")
        target = dest / _safe(art.task) / _safe(art.name)
        if target.exists():
            raise SubmitError(f"artifact {art.ref}: {target} already exists; not overwriting it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _fetch(client, bucket, art.key, staging / "x")
            (staging / "x").rename(target)
        except _NotFound:
            raise SubmitError(f"artifact {art.ref}: s3://{bucket}/{art.key}: no such object or folder") from None
        except S3Error as e:
            if e.code in _CREDENTIAL_CODES:
                raise SubmitError(f"artifact {art.ref}: S3 at {config.endpoint} refused the credentials "
                                  f"({e.code})") from None
            raise SubmitError(f"artifact {art.ref}: s3://{bucket}/{art.key}: {e.code}") from None
        except MinioException as e:
            raise SubmitError(f"artifact {art.ref}: s3://{bucket}/{art.key}: {type(e).__name__}: {e}") from None
        except urllib3.exceptions.HTTPError as e:
            raise SubmitError(f"artifact {art.ref}: cannot reach S3 at {config.endpoint}: {type(e).__name__}") from None
        except OSError as e:
            raise SubmitError(f"artifact {art.ref}: cannot write under {target.parent}: {e.strerror}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        written.append(target)
    return written


class _NotFound(Exception):
    pass


def _fetch(client, bucket: str, key: str, target: Path) -> None:  # type: ignore[no-untyped-def]
    """One object to a file, or every object under a prefix into a directory."""
    from minio.error import S3Error

    if not key.endswith("/"):
        try:
            client.fget_object(bucket, key, str(target))
            return
        except S3Error as e:  # not an object: maybe a directory prefix without its trailing slash
            if e.code not in ("NoSuchKey", "NoSuchObject"):
                raise
        key += "/"
    objects = [o for o in client.list_objects(bucket, prefix=key, recursive=True) if not o.is_dir]
    if not objects:
        raise _NotFound
    for obj in objects:
        rel = obj.object_name[len(key):]
        path = target / rel
        if ".." in Path(rel).parts:
            raise SubmitError(f"s3://{bucket}/{obj.object_name}: refusing a key that escapes its folder")
        client.fget_object(bucket, obj.object_name, str(path))


def _safe(part: str) -> str:
    """A node display name such as `assess-image(0:a.jpg)` as one path component."""
    return part.replace("/", "_").replace("\\", "_") or "_"
