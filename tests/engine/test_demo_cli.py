"""`kai-flows demo` refuses what it cannot run before it renders or runs anything."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from kai_flows.cli.demo import register


def test_demo_names_an_unknown_pipeline_and_leaves_the_output_folder_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("KAI_CACHE_DIR", str(tmp_path / "cache"))
    app = typer.Typer()
    register(app)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a previous run")
    res = CliRunner().invoke(app, ["demo", "--pipeline", "image-quality", "--out", str(out)])
    assert res.exit_code == 2
    assert "'image-quality' is not a reconstruction pipeline" in res.output and "radiance-field" in res.output
    assert (out / "keep.txt").read_text() == "a previous run" and not (tmp_path / "cache").exists()
