"""Local inputs are stored by content: a re-run on the same folder re-uses it, a changed folder is a new key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kai_flows.engine import RunRequestError, run_pipeline
from kai_flows.store import ArtifactStore
from tests.engine.wf import OK, container, dag, workflow

PIPE = workflow([dag("main", [{"name": "a", "template": "ok", "arguments": {"artifacts": [
    {"name": "images", "s3": {"key": "{{workflow.parameters.images}}"}}]}}]),
    container("ok", OK, in_artifacts=[{"name": "images", "path": "/in/images"}])],
    params=[{"name": "images"}], annotations={"kai-flows.io/inputs": '{"images": "images"}'})


class CountingStore(ArtifactStore):
    """The real store, counting the uploads of input keys."""

    input_uploads = 0

    def upload(self, local: Path, key: str, *, replace: bool = True):  # type: ignore[no-untyped-def]
        if key.startswith("inputs/"):
            self.input_uploads += 1
        return super().upload(local, key, replace=replace)


def test_same_content_is_uploaded_once_and_new_content_gets_a_new_key(store: ArtifactStore, tmp_path: Path) -> None:
    counting = CountingStore(store.config)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"A" * 1000)

    def run(n: int) -> str:
        r = run_pipeline(PIPE, inputs={"images": photos}, out=tmp_path / f"out{n}", store=counting,
                         cache=tmp_path / "cache", progress=False)
        assert r.phase == "Succeeded", r.message
        return json.loads(r.record.read_text())["kai"]["parameters"]["images"]

    first, second = run(1), run(2)
    assert first == second and counting.input_uploads == 1
    (photos / "a.jpg").write_bytes(b"B" * 1000)  # same name and size, other bytes
    third = run(3)
    assert third != first and counting.input_uploads == 2
    assert sorted(store.list_keys("inputs/")) == sorted([f"{first}/a.jpg", f"{third}/a.jpg"])


def test_resume_refuses_an_input_folder_that_changed(store: ArtifactStore, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"A" * 10)
    gate = tmp_path / "gate"
    doc = workflow([dag("main", [{"name": "a", "template": "gated", "arguments": {"artifacts": [
        {"name": "images", "s3": {"key": "{{workflow.parameters.images}}"}}]}}]),
        container("gated", f"import sys, pathlib; sys.exit(0 if pathlib.Path({str(gate)!r}).exists() else 3)",
                  in_artifacts=[{"name": "images", "path": "/in/images"}])],
        params=[{"name": "images"}], annotations={"kai-flows.io/inputs": '{"images": "images"}'})

    def run(**kw: object):
        return run_pipeline(doc, store=store, cache=tmp_path / "cache", progress=False, out=tmp_path / "out", **kw)

    failed = run(inputs={"images": photos})
    assert failed.phase == "Failed"
    (photos / "a.jpg").write_bytes(b"B" * 10)
    with pytest.raises(RunRequestError, match=r"input 'images': .*photos changed since run '.*' stored it; start a "
                                              r"new run instead of resuming"):
        run(inputs={"images": photos}, resume=failed.name)
    other = tmp_path / "other-photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"C" * 10)
    with pytest.raises(RunRequestError, match=rf"input 'images': --resume {failed.name} ran on {photos}; {other} "
                                              r"holds other files; start a new run instead of resuming"):
        run(inputs={"images": other}, resume=failed.name)
    (photos / "a.jpg").write_bytes(b"A" * 10)  # back as it was: the resume goes ahead
    gate.write_text("open")
    assert run(inputs={"images": photos}, resume=failed.name).phase == "Succeeded"


def test_a_folder_changing_during_its_upload_leaves_no_content_key(store: ArtifactStore, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"A" * 10)

    class SyncingStore(ArtifactStore):
        """The real store; a photo sync rewrites a file after the engine hashed the folder."""

        def upload(self, local: Path, key: str, *, replace: bool = True):  # type: ignore[no-untyped-def]
            (photos / "a.jpg").write_bytes(b"C" * 10)
            return super().upload(local, key, replace=replace)

    with pytest.raises(RunRequestError, match=r"input 'images': .*photos changed while it was being uploaded"):
        run_pipeline(PIPE, inputs={"images": photos}, out=tmp_path / "out", store=SyncingStore(store.config),
                     cache=tmp_path / "cache", progress=False)
    assert store.list_keys("inputs/") == []
