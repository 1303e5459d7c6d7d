"""`kai-flows lint` through its typer command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kai_flows.cli.lint import register

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keep `lint` a subcommand, as in the real CLI
        pass

    register(app)
    return app


def test_clean_prints_one_ok_line(app: typer.Typer, images_dir: Path) -> None:
    result = CliRunner().invoke(app, ["lint", str(HERE / "valid"), "--images", str(images_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == ["OK: 10 objects in 2 files, no problems"]


def test_problems_one_per_line_and_exit_1(app: typer.Typer, images_dir: Path) -> None:
    cases = [HERE / "cases" / "dependency-cycle.yaml", HERE / "cases" / "unknown-pool.yaml"]
    result = CliRunner().invoke(app, ["lint", *map(str, cases), "--images", str(images_dir)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{cases[0]}: WorkflowTemplate/image-quality: template 'main': spec.templates[0].dag.tasks: "
        "dependency cycle detected: list-images->enhance->aggregate->assess-image->list-images",
        f"{cases[1]}: WorkflowTemplate/image-quality: template 'list-images': "
        "spec.templates[1].nodeSelector.kai.io/node-pool: unknown node pool 'gpu-xl'; known: cpu-optimized, "
        "gpu-optimized, gpu-high-end, memory-optimized, storage-optimized, orchestration, spot-instances",
    ]
    assert "2 problem(s) in 2 file(s)" in result.stderr


def test_default_path_is_workflow_templates(app: typer.Typer, tmp_path: Path, images_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(HERE / "valid", tmp_path / "workflow_templates" / "cluster")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["lint", "--images", str(images_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 10 objects in 2 files")


def test_missing_path_exits_2_with_one_line(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lint", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or directory"


def test_empty_folder_is_an_error_not_ok(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lint", str(tmp_path)])
    assert result.exit_code == 2 and "no .yaml/.yml files" in result.stderr
