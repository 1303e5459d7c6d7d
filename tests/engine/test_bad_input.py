"""Bad input gets a one-line error naming the thing at fault, before anything runs, and loses nothing."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from kai_flows.engine import RunRequestError, TemplateError, load_workflow, run_pipeline
from kai_flows.store import (
    S3Config,
    SeaweedStartError,
    StoreCredentialsError,
    StoreDirInUseError,
    StoreUnreachableError,
)
from kai_flows.store.seaweed import EmbeddedSeaweedFS, pick_ports
from tests.engine.wf import FAIL, OK, container, dag, workflow

PIPE = workflow([dag("main", [{"name": "a", "template": "ok", "arguments": {"artifacts": [
    {"name": "images", "s3": {"key": "{{workflow.parameters.images}}"}}]}}]),
    container("ok", OK, in_artifacts=[{"name": "images", "path": "/in/images"}])],
    params=[{"name": "images"}, {"name": "tier", "value": "standard", "enum": ["draft", "standard", "high"]}],
    annotations={"kai-flows.io/inputs": '{"images": "images"}'})


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    (d / "x.jpg").write_bytes(b"jpg")
    return d


def test_unknown_parameter(run, images):
    with pytest.raises(RunRequestError, match="unknown parameter 'colour'"):
        run(PIPE, parameters={"colour": "red"}, inputs={"images": images})


def test_value_outside_enum(run, images):
    with pytest.raises(RunRequestError, match=r"parameter 'tier': 'ultra' is not one of draft, standard, high"):
        run(PIPE, parameters={"tier": "ultra"}, inputs={"images": images})


def test_missing_parameter_names_the_input_flag(run):
    with pytest.raises(RunRequestError, match=r"missing parameter 'images' \(give the input folder with --input"):
        run(PIPE)


def test_unknown_input(run, images):
    with pytest.raises(RunRequestError, match="unknown input 'photos'"):
        run(PIPE, inputs={"photos": images})


def test_missing_empty_and_unreadable_input_folders(run, tmp_path):
    with pytest.raises(RunRequestError, match="does not exist"):
        run(PIPE, inputs={"images": tmp_path / "nope"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunRequestError, match="is empty"):
        run(PIPE, inputs={"images": empty})
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "f").write_text("x")
    (locked / "f").chmod(0)
    with pytest.raises(RunRequestError, match="not readable"):
        run(PIPE, inputs={"images": locked})
    assert not (tmp_path / "out" / "run.json").exists()  # nothing ran


def test_out_inside_input_is_refused(run, images):
    with pytest.raises(RunRequestError, match="inside input 'images'"):
        run(PIPE, inputs={"images": images}, out=images / "out")
    assert sorted(p.name for p in images.iterdir()) == ["x.jpg"]


def test_unknown_pipeline_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunRequestError, match="unknown pipeline 'nosuch'"):
        run_pipeline("nosuch", out=tmp_path / "o", progress=False)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nspec:\n  templates: [\n")
    with pytest.raises(TemplateError, match=r"bad\.yaml: line \d+, column \d+: malformed YAML"):
        load_workflow(bad)


def test_hand_edited_field_is_named(tmp_path):
    doc = workflow([dag("main", [{"name": "a", "template": "ok"}]), container("ok", OK)])
    doc["spec"]["templates"][1]["container"]["comand"] = ["oops"]
    with pytest.raises(TemplateError, match=r"spec\.templates\[1\]\.container\.comand: unknown field; Argo's "
                                            r"schema \(v3.7\) refuses it"):
        load_workflow(doc)


def test_run_with_crashing_step_records_failure_and_keeps_going_records(run, tmp_path):
    doc = workflow([dag("main", [{"name": "crash", "template": "crash"}]), container("crash", FAIL)])
    r = run(doc)
    assert r.phase == "Failed" and "boom: step failed on purpose" in r.message
    assert (tmp_path / "out" / "run.json").is_file()


def test_s3_down_is_a_clear_error(tmp_path, images):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = S3Config(endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="b", bucket="kai-test")
    with pytest.raises(StoreUnreachableError, match=f"127.0.0.1:{port} is unreachable"):
        run_pipeline(PIPE, inputs={"images": images}, out=tmp_path / "o", store=cfg, cache=tmp_path / "c",
                     progress=False)


def test_bad_credentials_are_a_clear_error(seaweed_server, tmp_path, images):
    cfg = seaweed_server.config("kai-creds").model_copy(update={"secret_key": "wrong"})
    with pytest.raises(StoreCredentialsError, match="refused the credentials"):
        run_pipeline(PIPE, inputs={"images": images}, out=tmp_path / "o", store=cfg, cache=tmp_path / "c",
                     progress=False)


def test_port_taken_for_the_embedded_store(tmp_path):
    """The embedded store on a port someone else holds: a one-line SeaweedStartError naming the port."""
    ports = pick_ports()
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[3]))
        s.listen()
        server = EmbeddedSeaweedFS(tmp_path / "sw", ports=tuple(ports))
        with pytest.raises(SeaweedStartError, match=f"port {ports[3]} .* already in use"):
            server.start()


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_overlapping_runs_get_their_own_embedded_store(tmp_path, images):
    """A second run while the default store folder is in use starts its own server in the next folder (and records
    it, so a resume finds its artifacts); an explicitly chosen folder in use is a one-line error instead."""
    cache = tmp_path / "cache"
    with EmbeddedSeaweedFS(cache / "store"):  # another run holding the default folder
        result = run_pipeline(PIPE, inputs={"images": images}, out=tmp_path / "o", cache=cache, progress=False)
        assert result.phase == "Succeeded"
        record = json.loads(result.record.read_text())
        assert record["kai"]["store"]["dir"] == str(cache / "store-2")
        with pytest.raises(StoreDirInUseError, match=r"data dir '.*/cache/store' is in use by another embedded"):
            run_pipeline(PIPE, inputs={"images": images}, out=tmp_path / "o2", cache=cache, progress=False,
                         store_dir=cache / "store")


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_resume_uses_the_store_folder_of_its_run(tmp_path):
    """A resumed run's artifacts are in the folder its run used: it goes there (not to a free default one)."""
    cache = tmp_path / "cache"
    doc = workflow([dag("main", [{"name": "a", "template": "bad"}]), container("bad", FAIL)])
    with EmbeddedSeaweedFS(cache / "store"):
        failed = run_pipeline(doc, out=tmp_path / "o", cache=cache, progress=False)
    assert failed.phase == "Failed"
    assert json.loads(failed.record.read_text())["kai"]["store"]["dir"] == str(cache / "store-2")
    with EmbeddedSeaweedFS(cache / "store-2"), pytest.raises(
            StoreDirInUseError, match=r"data dir '.*/cache/store-2' is in use by another embedded"):
        run_pipeline(doc, out=tmp_path / "o", cache=cache, progress=False, resume=failed.name)


@pytest.mark.parametrize("value", ["/etc", "../../etc", "inputs/../../etc", ""])
def test_a_parameter_naming_an_input_is_a_key_in_the_bucket_never_a_host_path(run, value, tmp_path):
    # The input cache once joined an absolute "key" onto its root and hard-linked that host folder into the step.
    with pytest.raises(RunRequestError, match=r"parameter 'images' carries the S3 key of input 'images'"):
        run(PIPE, parameters={"images": value})
    assert not (tmp_path / "out" / "run.json").exists()  # refused before anything ran


def test_the_input_cache_refuses_a_key_that_is_not_relative(tmp_path):
    from kai_flows.engine.artifacts import InputCache
    from kai_flows.store import InvalidKeyError

    cache = InputCache(store=None, root=tmp_path / "cache")
    with pytest.raises(InvalidKeyError, match="invalid artifact key '/etc'"):
        cache.materialise("/etc", None, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_out_holding_another_runs_outputs_is_refused(run, images, tmp_path):
    first = run(PIPE, inputs={"images": images})
    assert first.phase == "Succeeded", first.message
    with pytest.raises(RunRequestError, match=rf"--out .* already holds the outputs of run {first.name}; give a new "
                                              "or empty folder"):
        run(PIPE, inputs={"images": images})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.glb").write_bytes(b"old")
    with pytest.raises(RunRequestError, match=r"already holds 1 entries \(model\.glb\)"):
        run(PIPE, inputs={"images": images}, out=tmp_path / "other")
    assert (tmp_path / "other" / "model.glb").read_bytes() == b"old"  # untouched


def test_out_that_is_a_file_or_cannot_be_created_is_one_line(run, images, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunRequestError, match=r"--out .*/f is a file; give a folder"):
        run(PIPE, inputs={"images": images}, out=tmp_path / "f")
    with pytest.raises(RunRequestError, match=r"--out .*/f/sub cannot be created or written: Not a directory"):
        run(PIPE, inputs={"images": images}, out=tmp_path / "f" / "sub")


@pytest.mark.parametrize("value", [0, -2])
def test_parallelism_below_one_is_refused(run, images, value):
    with pytest.raises(RunRequestError, match=rf"--parallelism {value}: at least 1"):
        run(PIPE, inputs={"images": images}, parallelism=value)
