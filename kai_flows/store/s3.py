"""The S3 artifact store: one ``minio`` client, Argo's keys, atomic publication.

How it maps to Argo
-------------------
An output artifact lives at the key Argo would give it with the default ``keyFormat``
``{{workflow.name}}/{{pod.name}}`` and ``archive: none`` (no tarball): ``<workflow>/<pod>/<artifact-name>``
(see ``kai_flows.argo.names.argo_artifact_key``: Argo's names). A file artifact is
one object at that key; a directory artifact is one object per file under ``<key>/``, which is what Argo's
executor uploads for a directory with ``archive: none``. So a local run's bucket reads like a cluster run's,
and a cluster's MinIO/S3 (named by the artifact-repository ConfigMap) is reached through the same class.

Publication
-----------
S3 has no rename, so an artifact becomes visible through a completion manifest written *last*, at
``.kai/manifests/<key>.json`` (outside the artifact's own keys, so they stay exactly Argo's). The manifest
lists every object's relative path, size and sha256 (and the empty directories). ``exists``, ``is_dir``,
``download`` and ``get_bytes`` see only published artifacts; ``download`` checks every size and sha256 and
builds the file or directory beside its destination, renaming it into place only when complete. An upload
to a key first withdraws the old manifest and objects, so a reader sees the old artifact, nothing, or the
new artifact, never a mixture. Objects written by Argo itself carry no manifest: ``exists`` is False for them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import ValidationError

from kai_flows.store.config import S3Config
from kai_flows.store.errors import (
    InvalidKeyError,
    LocalPathError,
    StoreBucketMissingError,
    StoreCredentialsError,
    StoreError,
    StoreIntegrityError,
    StoreKeyMissingError,
    StoreUnreachableError,
)
from kai_flows.store.manifest import MANIFEST_PREFIX, Manifest, ManifestEntry, check_key, manifest_key, scan_local

__all__ = ["ArtifactStore", "S3Config"]

T = TypeVar("T")
R = TypeVar("R")

_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}
_MISSING_KEY_CODES = {"NoSuchKey", "ResourceNotFound"}
_CHUNK = 1 << 20


class _HashingReader:
    """Reads a file for minio while hashing it, so each byte is read from disk once."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        self.count += len(data)
        return data


class ArtifactStore:
    """Artifacts (files and directories) in one S3 bucket under Argo's keys; see the module docstring."""

    def __init__(
        self,
        config: S3Config,
        *,
        workers: int = 8,
        part_size: int = 32 << 20,
        verify_sha256: bool = True,
    ) -> None:
        self.config = config
        self.bucket: str = config.bucket
        self.workers = workers
        self.part_size = part_size
        self.verify_sha256 = verify_sha256
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=300),
            maxsize=workers + 4,
            cert_reqs="CERT_REQUIRED" if config.secure else "CERT_NONE",
            ca_certs=certifi.where() if config.secure else None,
            # A refused connection fails in under a second; 5xx answers get a few tries over ~3 s.
            retries=urllib3.Retry(total=4, connect=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            config.endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key,
            secure=config.secure,
            region=config.region,
            http_client=http,
        )

    # ---------------------------------------------------------------- errors
    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Turn minio/urllib3 failures into one-line ``StoreError``s naming the endpoint, bucket or key."""
        endpoint = self.config.endpoint
        try:
            yield
        except S3Error as err:
            code = err.code or ""
            if code in _CREDENTIAL_CODES:
                raise StoreCredentialsError(
                    f"S3 endpoint {endpoint} refused the credentials for access key {self.config.access_key!r} ({code})"
                ) from None
            if code in _MISSING_KEY_CODES:
                raise StoreKeyMissingError(
                    f"no object at key {key or err.object_name!r} in bucket {self.bucket!r}"
                ) from None
            if code == "NoSuchBucket":
                raise StoreBucketMissingError(
                    f"bucket {self.bucket!r} does not exist at {endpoint} (call ensure_bucket())"
                ) from None
            raise StoreError(f"S3 endpoint {endpoint}: {code}: {_one_line(err.message or '')} (key {key!r})") from None
        except (ServerError, InvalidResponseError) as err:
            raise StoreError(f"S3 endpoint {endpoint} answered with an error: {_one_line(str(err))}") from None
        except urllib3.exceptions.MaxRetryError as err:
            if isinstance(err.reason, urllib3.exceptions.ResponseError):
                raise StoreError(f"S3 endpoint {endpoint} kept failing: {_one_line(str(err.reason))}") from None
            raise StoreUnreachableError(f"S3 endpoint {endpoint} is unreachable: {_reason(err)}") from None
        except urllib3.exceptions.HTTPError as err:
            raise StoreUnreachableError(f"S3 endpoint {endpoint} is unreachable: {_reason(err)}") from None

    # ---------------------------------------------------------------- bucket
    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        with self._errors():
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as err:
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # ---------------------------------------------------------------- artifacts
    def upload(self, local: Path, key: str, *, replace: bool = True) -> Manifest:
        """Publish a file (one object at ``key``) or a directory (objects under ``key/``), manifest last.

        ``replace=False`` is for content-addressed keys (see ``content_digest``): whatever is or will be published
        there is the same content, so the key is not withdrawn first and a concurrent reader never loses it.
        """
        check_key(key)
        local = Path(local)
        kind, files, empty_dirs = scan_local(local)
        if replace:
            self._withdraw(key)
        # One big file: minio uploads its parts in parallel; many files: the pool uploads files in parallel.
        parts = self.workers if kind == "file" else 1
        jobs = [(key if kind == "file" else f"{key}/{rel}", rel, path, size, parts) for rel, path, size in files]
        entries = self._parallel(lambda job: self._put_file(*job), jobs)
        manifest = Manifest(key=key, kind=kind, files=entries, empty_dirs=empty_dirs)
        self._put_raw(manifest_key(key), manifest.model_dump_json().encode())
        return manifest

    def download(self, key: str, local: Path) -> None:
        """Recreate the published artifact at ``local`` (absent, or an empty directory); parents are created."""
        check_key(key)
        local = Path(local)
        manifest = self._manifest(key)
        _check_target(local)
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LocalPathError(f"cannot create {str(local.parent)!r}: {err.strerror}") from None
        partial = local.parent / f".{local.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            if manifest.kind == "file":
                self._get_file(manifest, manifest.files[0], partial)
            else:
                self._get_dir(manifest, partial)
            if local.is_dir():
                local.rmdir()  # _check_target allowed only an empty directory here
            os.rename(partial, local)
        except BaseException:
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        """Whether an artifact is published at ``key``."""
        check_key(key)
        try:
            with self._errors(key):
                self._client.stat_object(self.bucket, manifest_key(key))
        except StoreKeyMissingError:
            return False
        return True

    def is_dir(self, key: str) -> bool:
        """Whether the artifact published at ``key`` is a directory (``StoreKeyMissingError`` if none is)."""
        return self._manifest(check_key(key)).kind == "dir"

    def delete(self, key: str) -> None:
        """Withdraw the artifact at ``key`` (manifest first) and delete its objects; nothing there is no error."""
        self._withdraw(check_key(key))

    def list_keys(self, prefix: str) -> list[str]:
        """Every object key starting with ``prefix`` (S3 prefix semantics), sorted; manifests left out."""
        with self._errors(prefix):
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            names = [o.object_name for o in objects if o.object_name and not o.is_dir]
        return sorted(n for n in names if not n.startswith(MANIFEST_PREFIX))

    def delete_prefix(self, prefix: str) -> None:
        """Withdraw and delete every artifact and object whose key starts with ``prefix``."""
        if not prefix:
            raise InvalidKeyError("refusing to delete with an empty prefix (that is the whole bucket)")
        with self._errors(prefix):
            self._delete_listed(MANIFEST_PREFIX + prefix)  # unpublish first
            self._delete_listed(prefix)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Publish ``data`` as a one-object file artifact at ``key``."""
        check_key(key)
        self._withdraw(key)
        self._put_raw(key, data)
        entry = ManifestEntry(path="", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        self._put_raw(manifest_key(key), Manifest(key=key, kind="file", files=[entry]).model_dump_json().encode())

    def get_bytes(self, key: str) -> bytes:
        """The content of the file artifact published at ``key``."""
        manifest = self._manifest(check_key(key))
        if manifest.kind != "file":
            raise StoreError(f"artifact {key!r} is a directory, not a file")
        data = self._get_raw(key)
        _verify(key, manifest.files[0], len(data), hashlib.sha256(data) if self.verify_sha256 else None)
        return data

    # ---------------------------------------------------------------- internals
    def _manifest(self, key: str) -> Manifest:
        try:
            raw = self._get_raw(manifest_key(key))
        except StoreKeyMissingError:
            raise StoreKeyMissingError(f"no published artifact at key {key!r} in bucket {self.bucket!r}") from None
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError:
            raise StoreIntegrityError(f"the manifest of artifact {key!r} is unreadable") from None
        for entry in manifest.files:
            _safe_relative(key, entry.path, allow_empty=manifest.kind == "file")
        for empty in manifest.empty_dirs:
            _safe_relative(key, empty, allow_empty=False)
        return manifest

    def _withdraw(self, key: str) -> None:
        """Unpublish ``key`` and delete its objects, so an upload never mixes with an older one."""
        with self._errors(key):
            self._client.remove_object(self.bucket, manifest_key(key))
            self._client.remove_object(self.bucket, key)
            self._delete_listed(key + "/")

    def _delete_listed(self, prefix: str) -> None:
        objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
        doomed = [DeleteObject(o.object_name) for o in objects if o.object_name and not o.is_dir]
        for start in range(0, len(doomed), 1000):
            errors = list(self._client.remove_objects(self.bucket, doomed[start : start + 1000]))
            if errors:
                raise StoreError(f"could not delete {errors[0].name!r}: {errors[0].code} ({len(errors)} failures)")

    def _put_raw(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self._client.put_object(self.bucket, key, _BytesReader(data), len(data))

    def _get_raw(self, key: str) -> bytes:
        with self._errors(key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def _put_file(self, object_key: str, rel: str, path: Path, size: int, parallel_parts: int) -> ManifestEntry:
        try:
            stream = open(path, "rb")
        except OSError as err:
            raise LocalPathError(f"cannot read local file {str(path)!r}: {err.strerror}") from None
        with stream:
            reader = _HashingReader(stream)
            try:
                with self._errors(object_key):
                    self._client.put_object(
                        self.bucket,
                        object_key,
                        reader,  # type: ignore[arg-type]
                        size,
                        part_size=max(self.part_size, 5 << 20),
                        num_parallel_uploads=parallel_parts,
                    )
            except ValueError as err:  # minio: the stream was shorter than the size we saw
                raise LocalPathError(f"local file {str(path)!r} changed while uploading: {err}") from None
        if reader.count != size or _file_size(path) != size:
            raise LocalPathError(f"local file {str(path)!r} changed while uploading")
        return ManifestEntry(path=rel, size=size, sha256=reader.sha256.hexdigest())

    def _get_dir(self, manifest: Manifest, root: Path) -> None:
        root.mkdir()
        for rel in manifest.empty_dirs:
            (root / rel).mkdir(parents=True, exist_ok=True)
        for parent in {(root / e.path).parent for e in manifest.files}:
            parent.mkdir(parents=True, exist_ok=True)
        self._parallel(lambda entry: self._get_file(manifest, entry, root / entry.path), manifest.files)

    def _get_file(self, manifest: Manifest, entry: ManifestEntry, dest: Path) -> None:
        object_key = manifest.object_key(entry)
        digest = hashlib.sha256() if self.verify_sha256 else None
        count = 0
        try:
            with self._errors(object_key):
                response = self._client.get_object(self.bucket, object_key)
                try:
                    with open(dest, "wb") as out:
                        for chunk in response.stream(_CHUNK):
                            out.write(chunk)
                            count += len(chunk)
                            if digest is not None:
                                digest.update(chunk)
                finally:
                    response.close()
                    response.release_conn()
        except StoreKeyMissingError:
            raise StoreIntegrityError(
                f"artifact {manifest.key!r} is published but its object {object_key!r} is missing"
            ) from None
        except OSError as err:
            raise LocalPathError(f"cannot write {str(dest)!r}: {err.strerror}") from None
        _verify(object_key, entry, count, digest)

    def _parallel(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run ``fn`` over ``items`` on the thread pool; the first failure cancels what has not started."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kai-store")
        try:
            futures = [pool.submit(fn, item) for item in items]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos : end])
        self._pos += len(chunk)
        return chunk


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _verify(object_key: str, entry: ManifestEntry, count: int, digest: hashlib._Hash | None) -> None:
    if count != entry.size:
        raise StoreIntegrityError(f"object {object_key!r} has {count} bytes, its manifest says {entry.size}")
    if digest is not None and digest.hexdigest() != entry.sha256:
        raise StoreIntegrityError(f"object {object_key!r} does not match the sha256 in its manifest")


def _check_target(local: Path) -> None:
    if local.is_dir():
        try:
            empty = next(local.iterdir(), None) is None
        except OSError as err:
            raise LocalPathError(f"cannot read {str(local)!r}: {err.strerror}") from None
        if empty:
            return
    if local.exists() or local.is_symlink():
        raise LocalPathError(f"download target {str(local)!r} already exists (only an empty directory may be replaced)")


def _safe_relative(key: str, rel: str, *, allow_empty: bool) -> None:
    if rel == "" and allow_empty:
        return
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreIntegrityError(f"the manifest of artifact {key!r} names an unsafe path {rel!r}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _reason(err: Exception) -> str:
    reason = getattr(err, "reason", None) or err
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return _one_line(text)
