"""`kai-flows run` / `kai-flows runs` through typer (the commands are registered on a fresh app here)."""

from __future__ import annotations

import json

import typer
import yaml
from typer.testing import CliRunner

from kai_flows.cli.engine import register
from tests.engine.wf import ECHO, container, dag, workflow


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_run_then_runs_list_and_show(tmp_path, seaweed_server, monkeypatch):
    monkeypatch.setenv("KAI_CACHE_DIR", str(tmp_path / "cache"))
    for k, v in seaweed_server.config("kai-cli").to_env().items():
        monkeypatch.setenv(k, v)
    doc = workflow([dag("main", [{"name": "hello", "template": "echo", "arguments": {"parameters": [
        {"name": "x", "value": "{{workflow.parameters.who}}"}]}}]),
        container("echo", ECHO, "{{inputs.parameters.x}}", params=[{"name": "x"}])],
        name="hello", params=[{"name": "who", "value": "world", "enum": ["world", "you"]}])
    path = tmp_path / "hello.yaml"
    path.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    res = runner.invoke(app(), ["run", str(path), "-p", "who=you", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "Succeeded" in res.output and "hello Running" in res.output  # plain progress lines off a terminal
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    name = record["kai"]["name"]
    res = runner.invoke(app(), ["runs", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)[0]["name"] == name
    res = runner.invoke(app(), ["runs", "show", name, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["phase"] == "Succeeded"
    res = runner.invoke(app(), ["runs", "show", "nope"])
    assert res.exit_code == 2 and "no run named 'nope'" in res.output


def test_run_bad_parameter_exits_2_with_one_line(tmp_path, seaweed_server, monkeypatch):
    monkeypatch.setenv("KAI_CACHE_DIR", str(tmp_path / "cache"))
    doc = workflow([dag("main", [{"name": "a", "template": "echo", "arguments": {"parameters": [
        {"name": "x", "value": "1"}]}}]), container("echo", ECHO, "{{inputs.parameters.x}}",
                                                   params=[{"name": "x"}])], name="bad")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(app(), ["run", str(path), "-p", "nope=1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "unknown parameter 'nope'" in res.output and "Traceback" not in res.output


def test_an_invalid_s3_bucket_name_is_one_line_and_nothing_runs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    res = CliRunner().invoke(app(), ["run", "image-quality", "--input", f"images={photos}", "--out",
                                     str(tmp_path / "out"), "--s3-endpoint", "127.0.0.1:9", "--s3-access-key", "a",
                                     "--s3-secret-key", "b", "--s3-bucket", "Bad_Bucket"])
    assert res.exit_code == 2
    assert " ".join(res.output.split()) == (  # one message (the console wraps it to its width), no pydantic dump
        "error: S3 bucket: 'Bad_Bucket' is not a valid S3 bucket name (3-63 characters: "
                                  "lowercase letters, digits, dots and hyphens, starting and ending with a letter or "
                                  "digit)")
    assert not (tmp_path / "out").exists()


def test_bracketed_names_in_messages_survive_the_console(tmp_path, seaweed_server, monkeypatch):
    """Messages name fields as `spec.templates[name]` and steps print `[x]`: the console shows them as text
    (Rich would take `[name]` for markup and drop it)."""
    monkeypatch.setenv("KAI_CACHE_DIR", str(tmp_path / "cache"))
    for k, v in seaweed_server.config("kai-cli-brackets").to_env().items():
        monkeypatch.setenv(k, v)
    doc = workflow([dag("main", [{"name": "t", "template": "boom"}]),
                    container("boom", "import sys; print('boom in [stage-b] [red]', file=sys.stderr); sys.exit(3)")],
                   name="brackets")
    path = tmp_path / "brackets.yaml"
    path.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    res = runner.invoke(app(), ["run", str(path), "--out", str(tmp_path / "out")], terminal_width=200)
    assert res.exit_code == 1
    assert "boom in [stage-b] [red]" in res.output
    name = json.loads((tmp_path / "out" / "run.json").read_text())["kai"]["name"]
    res = runner.invoke(app(), ["runs", "show", name], terminal_width=250)
    assert res.exit_code == 0
    assert "[stage-b]" in res.output
    bad = tmp_path / "bad.yaml"
    doc["spec"]["templates"][0]["activeDeadlineSeconds"] = 5
    bad.write_text(yaml.safe_dump(doc))
    res = runner.invoke(app(), ["run", str(bad), "--out", str(tmp_path / "out2")], terminal_width=300)
    assert res.exit_code == 2 and "spec.templates[main].activeDeadlineSeconds" in res.output
