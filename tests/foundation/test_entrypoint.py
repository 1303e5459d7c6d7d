import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.foundation.steps_fixture import Counted, count_lines

ENTRY = [sys.executable, "-m", "kai_flows.entrypoint"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"})


def test_a_step_is_a_plain_function(tmp_path):
    (tmp_path / "in.txt").write_text("a\nb\nc")
    result = count_lines(tmp_path / "in.txt", tmp_path / "out", label="plain", scale=2.0)
    assert result == Counted(lines=6, label="plain", words=["a", "b"])
    assert (tmp_path / "out" / "count.txt").read_text() == "3"


def test_entry_point_validates_runs_and_publishes(tmp_path):
    (tmp_path / "in.txt").write_text("a\nb")
    out_params = tmp_path / "params"
    proc = run("tests.foundation.steps_fixture:count_lines", "--param", "label=hello world", "--param", "scale=1.5",
               "--artifact", f"text={tmp_path / 'in.txt'}", "--artifact", f"summary={tmp_path / 'art' / 'summary'}",
               "--output", f"lines={out_params / 'lines'}", "--output", f"words={out_params / 'words'}",
               "--output", f"label={out_params / 'label'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"label": "hello world", "lines": 3, "words": ["a", "b"]}
    assert "counting" in proc.stderr  # the step's prints do not pollute stdout (Argo's outputs.result)
    assert (out_params / "lines").read_text() == "3"
    assert (out_params / "label").read_text() == "hello world"  # strings as they are
    assert json.loads((out_params / "words").read_text()) == ["a", "b"]  # anything else as JSON
    assert (tmp_path / "art" / "summary" / "count.txt").read_text() == "2"
    assert not list((tmp_path / "art").glob(".*staging*"))


@pytest.mark.parametrize("args, message", [
    (["--param", "scale=fast"], "parameter 'scale': Input should be a valid number"),
    (["--param", "mode=medium"], "parameter 'mode': Input should be 'fast' or 'slow'"),
    (["--param", "colour=red"], "unknown parameter 'colour'"),
    (["--param", "label"], "must look like NAME=VALUE"),
    (["--param", "label=a", "--param", "label=b"], "'label' given twice"),
])
def test_bad_parameters_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "in.txt").write_text("a")
    proc = run("tests.foundation.steps_fixture:count_lines", *args, "--artifact", f"text={tmp_path / 'in.txt'}",
               "--artifact", f"summary={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()


def test_missing_input_artifact_is_named(tmp_path):
    proc = run("tests.foundation.steps_fixture:count_lines", "--artifact", f"text={tmp_path / 'nope.txt'}",
               "--artifact", f"summary={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2 and "input artifact 'text' not found" in proc.stderr


@pytest.mark.parametrize("ref, message", [
    ("tests.foundation.nothing:x", "cannot import step module"),
    ("tests.foundation.steps_fixture:nothing", "has no function 'nothing'"),
    ("tests.foundation.steps_fixture:Counted", "is not a step"),
    ("no_colon", "must look like 'package.module:function'"),
])
def test_unknown_step_is_named(tmp_path, ref, message):
    proc = run(ref, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr


def test_json_list_parameter_and_absent_optional_input(tmp_path):
    proc = run("tests.foundation.steps_fixture:needs_list", "--param", "numbers=[1, 2, 3]",
               "--artifact", f"extra={tmp_path / 'absent'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["lines"] == 6 and json.loads(proc.stdout)["label"] == "sum"


def test_failed_step_publishes_nothing(tmp_path):
    proc = run("tests.foundation.steps_fixture:crashes", "--artifact", f"out={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("ValueError: the photos are upside down")
    assert list(tmp_path.iterdir()) == []


def test_step_that_writes_no_declared_output_fails(tmp_path):
    proc = run("tests.foundation.steps_fixture:forgets_output", "--artifact", f"out={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 1 and "without writing output artifact(s) ['out']" in proc.stderr
