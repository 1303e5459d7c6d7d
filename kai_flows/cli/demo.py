"""`kai-flows sample` (a synthetic scene with exact ground truth) and `kai-flows demo` (what `make run` does)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)


def sample_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="new folder for images/, gt_cameras/, gt_mesh.ply"),
    views: int = typer.Option(30, help="number of viewpoints (24-36 recommended)"),
    width: int = typer.Option(960),
    height: int = typer.Option(720),
    seed: int = typer.Option(0),
) -> None:
    """Render the synthetic sample scene: a textured object on a textured ground, with exact cameras and mesh."""
    from kai_steps.sample_scene import render_sample_scene

    try:
        summary = render_sample_scene(out, views=views, width=width, height=height, seed=seed)
    except ValueError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    print(f"{out}: {summary.views} views of {summary.width}x{summary.height}, gt mesh {summary.mesh_faces} faces")


def _ensure_sample(folder: Path) -> Path:
    from kai_steps.sample_scene import render_sample_scene

    if not (folder / "images").is_dir():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        console.print(f"rendering the sample scene into {escape(str(folder))} ...")
        render_sample_scene(staging)
        staging.rename(folder)
    return folder


def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="where the run's outputs go (replaced)"),
    tier: str = typer.Option("standard", "--tier", help="quality tier: draft, standard or high"),
    images: Path = typer.Option(None, "--images", help="reconstruct these photos instead of the sample scene"),
    pipeline: str = typer.Option("reconstruction", "--pipeline",
                                 help="reconstruction (dense points and a mesh) or radiance-field (a voxel radiance "
                                      "field, marching cubes)"),
) -> None:
    """Reconstruct the sample scene (or --images) through the local engine and report accuracy."""
    from kai_flows.engine.model import EngineError
    from kai_flows.engine.runner import cache_dir, run_pipeline
    from kai_flows.evaluate import evaluate

    if pipeline not in ("reconstruction", "radiance-field"):
        console.print(f"[red]error:[/red] --pipeline {escape(pipeline)!r} is not a reconstruction pipeline: give "
                      "reconstruction or radiance-field")
        raise typer.Exit(2)
    sample = None if images else _ensure_sample(cache_dir() / "sample-v1")
    source = images or sample / "images"  # type: ignore[operator]
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    try:
        result = run_pipeline(pipeline, parameters={"quality_tier": tier}, inputs={"images": source}, out=out)
    except EngineError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    outputs = {k: v for k, v in result.outputs.items() if v is not None}
    table = Table("what", "where", title=f"{pipeline} {result.phase} in {seconds:.0f} s")
    if "models" in outputs:
        for f in sorted(outputs["models"].iterdir()):
            table.add_row(f.suffix.lstrip(".") or f.name, str(f))
    if "report" in outputs:
        report = outputs["report"]
        table.add_row("report", str(report / "index.html"))
        for png in sorted(report.glob("*.png")):
            table.add_row("preview", str(png))
    table.add_row("run record", str(result.record))
    Console().print(table)
    page = _report_page(outputs)
    if result.phase != "Succeeded":
        console.print(f"[red]{escape(result.message)}[/red]")
        if page is not None:
            print(f"what went wrong, in the report: {page.resolve().as_uri()}")
        raise typer.Exit(1)
    if sample is not None and "cameras" in outputs and "mesh" in outputs:
        accuracy = evaluate(outputs["cameras"], sample / "gt_cameras", outputs["mesh"], sample / "gt_mesh.ply")
        figures = Table("accuracy against the exact scene", "value")
        figures.add_row("registered views", f"{accuracy.registered}/{accuracy.total}")
        figures.add_row("camera position error (mean / max)",
                        f"{accuracy.position_error_mean:.4f} / {accuracy.position_error_max:.4f} units "
                        f"({100 * accuracy.position_error_mean / accuracy.diagonal:.3f}% of the scene diagonal)")
        figures.add_row("camera rotation error (mean)", f"{accuracy.rotation_error_mean_deg:.3f} deg")
        figures.add_row("mesh F-score at 1% / 0.5% of the diagonal",
                        f"{accuracy.fscore_1pct:.3f} / {accuracy.fscore_05pct:.3f}")
        figures.add_row("Chamfer distance", f"{accuracy.chamfer:.4f} units")
        field = [n for n in result.nodes.values() if n.template == "radiance-field" and n.phase == "Succeeded"]
        if field and field[-1].outputs.get("result"):  # scored on the views the field never trained on
            scores = json.loads(field[-1].outputs["result"])
            figures.add_row("radiance field PSNR / SSIM on held-out views",
                            f"{scores['psnr']:.2f} dB / {scores['ssim']:.3f} (a constant colour: "
                            f"{scores['baseline_psnr']:.2f} dB)")
        Console().print(figures)
        (out / "accuracy.json").write_text(json.dumps(accuracy.as_dict(), indent=2))
    if page is not None:  # last, where a person looks: open it in a browser to turn the model
        print(f"the model in a 3D viewer, open in a browser: {page.resolve().as_uri()}")


def _report_page(outputs: dict[str, Path]) -> Path | None:
    """The run's report page: the model's, else the rejection's, else the failure's."""
    for name in ("report", "rejection", "failure-report"):
        if name in outputs and (outputs[name] / "index.html").is_file():
            return outputs[name] / "index.html"
    return None


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)
    app.command("demo")(demo_cmd)
