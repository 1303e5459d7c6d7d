"""ArtifactStore against a real SeaweedFS: round trips, atomic publication, errors."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from minio import Minio

from kai_flows.store import (
    ArtifactStore,
    EmbeddedSeaweedFS,
    InvalidKeyError,
    LocalPathError,
    S3Config,
    StoreCredentialsError,
    StoreIntegrityError,
    StoreKeyMissingError,
    StoreUnreachableError,
)
from kai_flows.store.seaweed import pick_ports

StoreFactory = Callable[..., ArtifactStore]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and directory (None) under root, by relative path."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def make_tree(root: Path) -> Path:
    (root / "images" / "raw").mkdir(parents=True)
    (root / "images" / "raw" / "a.bin").write_bytes(os.urandom(300_000))
    (root / "images" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (root / "empty.txt").write_bytes(b"")
    (root / "unicode é name.txt").write_text("ünïcode")
    (root / "hollow" / "deeper").mkdir(parents=True)  # empty directories survive the trip
    (root / "sparse" / "big.bin").parent.mkdir()
    (root / "sparse" / "big.bin").write_bytes(os.urandom(7 << 20))  # above minio's 5 MiB minimum part
    return root


def raw_client(config: S3Config) -> Minio:
    return Minio(config.endpoint, config.access_key, config.secret_key, secure=False, region=config.region)


def test_directory_round_trip(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    src = make_tree(tmp_path / "src")
    before = tree(src)
    store.upload(src, "wf/wf-sfm-123/sparse")
    assert store.exists("wf/wf-sfm-123/sparse")
    assert store.is_dir("wf/wf-sfm-123/sparse")
    store.download("wf/wf-sfm-123/sparse", tmp_path / "new" / "parents" / "sparse")
    assert tree(tmp_path / "new" / "parents" / "sparse") == before
    assert tree(src) == before  # the input is untouched
    # the bucket holds plain objects under Argo's key, one per file (archive: none)
    files = sorted(k for k, v in before.items() if v is not None)
    assert store.list_keys("wf/wf-sfm-123/sparse/") == sorted(f"wf/wf-sfm-123/sparse/{f}" for f in files)


def test_file_round_trip_binary_and_empty(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    for name, data in (("blob.bin", os.urandom(1 << 20) + b"\x00\xff" * 10), ("empty.bin", b"")):
        src = tmp_path / name
        src.write_bytes(data)
        store.upload(src, f"wf/pod/{name}")
        assert store.exists(f"wf/pod/{name}") and not store.is_dir(f"wf/pod/{name}")
        store.download(f"wf/pod/{name}", tmp_path / "out" / name)
        assert (tmp_path / "out" / name).read_bytes() == data
    assert store.list_keys("wf/pod/") == ["wf/pod/blob.bin", "wf/pod/empty.bin"]


def test_download_into_empty_directory_replaces_it(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    store.put_bytes("k/file", b"data")
    (tmp_path / "target").mkdir()
    store.download("k/file", tmp_path / "target")
    assert (tmp_path / "target").read_bytes() == b"data"


def test_download_refuses_to_overwrite(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    store.put_bytes("k/file", b"new")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(LocalPathError, match="already exists"):
        store.download("k/file", tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_bytes_round_trip(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.put_bytes("wf/params/result", b"\x00{json}")
    assert store.get_bytes("wf/params/result") == b"\x00{json}"
    store.put_bytes("wf/params/result", b"second")
    assert store.get_bytes("wf/params/result") == b"second"


def test_missing_key_is_named(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    assert not store.exists("wf/pod/nothing")
    with pytest.raises(StoreKeyMissingError, match="'wf/pod/nothing'"):
        store.download("wf/pod/nothing", tmp_path / "x")
    with pytest.raises(StoreKeyMissingError, match="'wf/pod/nothing'"):
        store.get_bytes("wf/pod/nothing")
    with pytest.raises(StoreKeyMissingError, match="'wf/pod/nothing'"):
        store.is_dir("wf/pod/nothing")
    assert not (tmp_path / "x").exists()


def test_local_path_missing(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    with pytest.raises(LocalPathError, match="does-not-exist"):
        store.upload(tmp_path / "does-not-exist", "wf/pod/out")
    assert not store.exists("wf/pod/out")


def test_broken_symlink_inside_directory(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.txt").write_text("ok")
    (tmp_path / "d" / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(LocalPathError, match="dangling"):
        store.upload(tmp_path / "d", "wf/pod/out")
    assert not store.exists("wf/pod/out")


@pytest.mark.parametrize("key", ["", "/abs", "trailing/", "a//b", "a/../b", ".kai/manifests/x"])
def test_invalid_keys(store_factory: StoreFactory, tmp_path: Path, key: str) -> None:
    store = store_factory()
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")


def test_delete_prefix_unpublishes_and_deletes(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    store.upload(make_tree(tmp_path / "src"), "wf1/pod/a")
    store.put_bytes("wf1/pod/b", b"b")
    store.put_bytes("wf2/pod/c", b"c")
    store.delete_prefix("wf1/")
    assert not store.exists("wf1/pod/a") and not store.exists("wf1/pod/b")
    assert store.list_keys("wf1/") == []
    assert store.get_bytes("wf2/pod/c") == b"c"
    with pytest.raises(InvalidKeyError):
        store.delete_prefix("")


def _pause_after(store: ArtifactStore, count: int, paused: threading.Event, resume: threading.Event) -> None:
    """Make the store's S3 client stop after ``count`` object uploads until ``resume`` is set."""
    real_put = store._client.put_object
    calls = 0
    lock = threading.Lock()

    def put_object(bucket: str, name: str, *args: object, **kwargs: object) -> object:
        nonlocal calls
        with lock:
            calls += 1
            stop_here = calls == count + 1
        if stop_here:
            paused.set()
            assert resume.wait(30)
        return real_put(bucket, name, *args, **kwargs)

    store._client.put_object = put_object  # type: ignore[method-assign]


def test_reader_never_sees_a_partial_upload(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory(workers=1)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02}.bin").write_bytes(os.urandom(1000 + i))
    paused, resume = threading.Event(), threading.Event()
    _pause_after(store, 10, paused, resume)
    writer = threading.Thread(target=store.upload, args=(src, "wf/pod/out"))
    writer.start()
    try:
        assert paused.wait(30)
        # half the objects are in the bucket, yet nothing is published
        assert len(store.list_keys("wf/pod/out/")) == 10
        assert not store.exists("wf/pod/out")
        with pytest.raises(StoreKeyMissingError):
            store.download("wf/pod/out", tmp_path / "early")
        assert not (tmp_path / "early").exists()
    finally:
        resume.set()
        writer.join(30)
    assert store.exists("wf/pod/out")
    store.download("wf/pod/out", tmp_path / "late")
    assert tree(tmp_path / "late") == tree(src)


def test_interrupted_upload_is_never_published(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory(workers=1)
    src = make_tree(tmp_path / "src")
    real_put = store._client.put_object
    calls = 0

    def dropping_put(bucket: str, name: str, *args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 4:  # the connection drops on the fourth object
            raise urllib3.exceptions.ProtocolError("Connection aborted.")
        return real_put(bucket, name, *args, **kwargs)

    store._client.put_object = dropping_put  # type: ignore[method-assign]
    with pytest.raises(StoreUnreachableError):
        store.upload(src, "wf/pod/out")
    assert store.list_keys("wf/pod/out/")  # some objects did land ...
    assert not store.exists("wf/pod/out")  # ... but the artifact is not published
    with pytest.raises(StoreKeyMissingError):
        store.download("wf/pod/out", tmp_path / "dst")
    assert list(tmp_path.glob("*dst*")) == []


def test_reupload_replaces_without_leftovers(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    old = tmp_path / "old"
    (old / "gone").mkdir(parents=True)
    (old / "gone" / "stale.txt").write_text("stale")
    (old / "kept.txt").write_text("v1")
    store.upload(old, "wf/pod/out")
    new = tmp_path / "new"
    new.mkdir()
    (new / "kept.txt").write_text("v2")
    store.upload(new, "wf/pod/out")
    store.download("wf/pod/out", tmp_path / "got")
    assert tree(tmp_path / "got") == {"kept.txt": b"v2"}
    assert store.list_keys("wf/pod/out") == ["wf/pod/out/kept.txt"]


def test_tampered_object_is_refused(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    src = make_tree(tmp_path / "src")
    store.upload(src, "wf/pod/out")
    data = b"X" * 10240  # same size as b.bin, other bytes
    raw_client(store.config).put_object(store.bucket, "wf/pod/out/images/b.bin", io.BytesIO(data), len(data))
    with pytest.raises(StoreIntegrityError, match="images/b.bin"):
        store.download("wf/pod/out", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dst")] == []


def test_wrong_secret_is_a_credentials_error(seaweed_server: EmbeddedSeaweedFS, store_factory: StoreFactory) -> None:
    good = store_factory()
    good.put_bytes("wf/x", b"x")
    config = good.config.model_copy(update={"secret_key": "not-the-secret"})
    bad = ArtifactStore(config)
    with pytest.raises(StoreCredentialsError, match="refused the credentials") as info:
        bad.get_bytes("wf/x")
    assert seaweed_server.endpoint in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreCredentialsError):
        bad.ensure_bucket()
    unknown = ArtifactStore(good.config.model_copy(update={"access_key": "NOBODY"}))
    with pytest.raises(StoreCredentialsError, match="NOBODY"):
        unknown.exists("wf/x")


def test_endpoint_down_is_named(tmp_path: Path) -> None:
    port = pick_ports(1)[0]
    store = ArtifactStore(S3Config(endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="s", bucket="bkt"))
    with pytest.raises(StoreUnreachableError, match=f"127.0.0.1:{port} is unreachable: connection refused"):
        store.exists("wf/x")
    with pytest.raises(StoreUnreachableError):
        store.ensure_bucket()


def test_many_small_files_in_parallel(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory(workers=8)
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.txt").write_text(hashlib.sha256(str(i).encode()).hexdigest() * (i % 5))
    store.upload(src, "wf/pod/many")
    store.download("wf/pod/many", tmp_path / "dst")
    assert tree(tmp_path / "dst") == tree(src)


def test_empty_directory_round_trip(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    (tmp_path / "empty").mkdir()
    store.upload(tmp_path / "empty", "wf/pod/nothing-inside")
    assert store.exists("wf/pod/nothing-inside") and store.is_dir("wf/pod/nothing-inside")
    assert store.list_keys("wf/pod/nothing-inside") == []
    store.download("wf/pod/nothing-inside", tmp_path / "out")
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir()) == []
