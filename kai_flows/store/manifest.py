"""The completion manifest: the small object whose presence makes an artifact published.

S3 has no rename, so an artifact is published by writing its manifest *after* all of its objects. The
manifest lists every object (relative path, size, sha256) and the empty directories, and lives outside the
artifact's own keys (under ``MANIFEST_PREFIX``) so that the artifact's keys stay exactly the ones Argo writes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from kai_flows.store.errors import InvalidKeyError, LocalPathError

MANIFEST_PREFIX = ".kai/manifests/"
MANIFEST_FORMAT = "kai-flows/artifact-manifest/v1"


class ManifestEntry(BaseModel):
    path: str  # relative POSIX path inside a directory artifact; "" for a file artifact
    size: int
    sha256: str


class Manifest(BaseModel):
    format: str = MANIFEST_FORMAT
    key: str
    kind: Literal["file", "dir"]
    files: list[ManifestEntry]
    empty_dirs: list[str] = []

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def object_key(self, entry: ManifestEntry) -> str:
        return self.key if self.kind == "file" else f"{self.key}/{entry.path}"

    def content_digest(self) -> str:
        """The ``content_digest`` of what was uploaded (from the sizes and hashes read while uploading)."""
        return _digest(self.kind, [(f.path, f.size, f.sha256) for f in self.files], self.empty_dirs)


def manifest_key(key: str) -> str:
    return f"{MANIFEST_PREFIX}{key}.json"


def check_location(key: str) -> str:
    """A key that stays inside its bucket, as a submission may name it (a trailing '/' names a folder prefix):
    relative, without '.' or '..' parts. A host path is never a key."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"invalid artifact key {key!r}: a key is relative to its bucket (no leading '/')")
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidKeyError(f"invalid artifact key {key!r}: '.' and '..' parts are not allowed")
    return key


def check_key(key: str) -> str:
    """Refuse keys that S3 or Argo would treat oddly; return the key."""
    if not key or key.startswith("/") or key.endswith("/") or "//" in key or key.startswith(MANIFEST_PREFIX):
        raise InvalidKeyError(
            f"invalid artifact key {key!r}: give a non-empty key without leading/trailing '/' or '//'"
        )
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidKeyError(f"invalid artifact key {key!r}: '.' and '..' parts are not allowed")
    return key


def scan_local(local: Path) -> tuple[Literal["file", "dir"], list[tuple[str, Path, int]], list[str]]:
    """Return (kind, [(relative path, absolute path, size)], empty dirs) of a local file or directory."""
    if not local.exists():
        raise LocalPathError(f"local path {str(local)!r} does not exist")
    if local.is_file():
        return "file", [("", local, _size(local))], []
    if not local.is_dir():
        raise LocalPathError(f"local path {str(local)!r} is neither a file nor a directory")
    files: list[tuple[str, Path, int]] = []
    empty_dirs: list[str] = []

    def walk_error(err: OSError) -> None:
        raise LocalPathError(f"cannot read local directory {err.filename!r}: {err.strerror}")

    for root, dirs, names in os.walk(local, onerror=walk_error):
        root_path = Path(root)
        rel_root = root_path.relative_to(local).as_posix()
        if not dirs and not names and rel_root != ".":
            empty_dirs.append(rel_root)
        for name in names:
            path = root_path / name
            rel = path.relative_to(local).as_posix()
            files.append((rel, path, _size(path)))
    files.sort()
    empty_dirs.sort()
    return "dir", files, empty_dirs


def _size(path: Path) -> int:
    try:
        if not path.is_file():
            raise LocalPathError(f"local path {str(path)!r} is not a regular file (broken link or special file)")
        if not os.access(path, os.R_OK):
            raise LocalPathError(f"local file {str(path)!r} is not readable")
        return path.stat().st_size
    except OSError as err:
        raise LocalPathError(f"cannot read local file {str(path)!r}: {err.strerror}") from None


def content_digest(local: Path) -> str:
    """sha256 over a file's or directory's content: every relative path, size and file sha256, and the empty
    directories. Equal digests mean equal artifacts, so content can be addressed by it."""
    kind, files, empty_dirs = scan_local(local)
    return _digest(kind, [(rel, size, _file_sha256(path)) for rel, path, size in files], empty_dirs)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise LocalPathError(f"cannot read local file {str(path)!r}: {err.strerror}") from None
    return digest.hexdigest()


def _digest(kind: str, files: list[tuple[str, int, str]], empty_dirs: list[str]) -> str:
    outer = hashlib.sha256(kind.encode())
    for rel, size, sha256 in sorted(files):
        outer.update(f"\0{rel}\0{size}\0{sha256}".encode())
    for rel in sorted(empty_dirs):
        outer.update(f"\0{rel}/".encode())
    return outer.hexdigest()
