"""`kai-flows compile` and `kai-flows pipelines`: Python pipelines to committed YAML."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG, PolicyError

if TYPE_CHECKING:
    from kai_flows.compile import ClusterSettings

console = Console(stderr=True)


def compile_cmd(
    out: Path = typer.Option(Path("workflow_templates"), "--out", help="where the YAML goes"),
    registry: str | None = typer.Option(None, help=f"image registry, as in <registry>/kai/<image>:<tag> (default: the "
                                 f"image lock's, else {DEFAULT_REGISTRY})"),
    tag: str | None = typer.Option(None, help=f"image tag (default: the image lock's, else {DEFAULT_TAG})"),
    image_lock: Path | None = typer.Option(None, "--image-lock", help="pin every image by the registry digest recorded "
                                    "by `kai-flows images build --push --lock FILE`"),
    insecure_artifact_repository: bool = typer.Option(
        False, "--insecure-artifact-repository", help="reach the S3 artifact repository without TLS (written on "
        "its ConfigMap; lint refuses plain HTTP otherwise)"),
    kube_api_cidr: list[str] = typer.Option([], "--kube-api-cidr", help="where step pods may reach the Kubernetes "
                                            "API (repeatable; default: the private address ranges)"),
    database_cidr: list[str] = typer.Option([], "--database-cidr", help="where the coordinator reaches PostgreSQL "
                                            "(repeatable; default: the private address ranges)"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if the files under --out differ"),
) -> None:
    """Compile every pipeline to a WorkflowTemplate and render the cluster manifests."""
    from kai_flows.compile import compile_all, render_all  # imported here: `kai-flows --help` stays fast
    from kai_flows.images import ImageError, resolve_images
    from kai_flows.pipeline import PipelineError

    try:
        registry, tag, digests = resolve_images(registry, tag, image_lock)
        settings = cluster_settings(insecure_artifact_repository, kube_api_cidr, database_cidr)
        if check:
            drift = _drift(out, render_all(registry, tag, digests=digests, settings=settings))
            for line in drift:
                print(line)
            if drift:
                console.print(f"[red]{escape(str(out))} is out of date: run `make templates` and commit the "
                              "result[/red]")
                raise typer.Exit(1)
            console.print(f"{escape(str(out))} is up to date")
            return
        written = compile_all(out, registry, tag, digests=digests, settings=settings)
    except (PipelineError, PolicyError, ImageError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    for path in written:
        print(path)


def cluster_settings(insecure_artifact_repository: bool, kube_api_cidrs: list[str],
                     database_cidrs: list[str] | None = None) -> ClusterSettings:
    from kai_flows.compile import ClusterSettings

    default = ClusterSettings()
    return ClusterSettings(insecure_artifact_repository=insecure_artifact_repository,
                           kube_api_cidrs=tuple(kube_api_cidrs) or default.kube_api_cidrs,
                           database_cidrs=tuple(database_cidrs or ()) or default.database_cidrs)


def _drift(out: Path, files: dict[str, str]) -> list[str]:
    """A unified diff of every generated file whose committed copy differs."""
    lines: list[str] = []
    for rel, text in files.items():
        current = (out / rel).read_text() if (out / rel).exists() else ""
        if current != text:
            lines += difflib.unified_diff(current.splitlines(), text.splitlines(), f"{out / rel} (committed)",
                                          f"{out / rel} (compiled)", lineterm="", n=1)
    return lines


def pipelines_cmd() -> None:
    """List the pipelines with their parameters and inputs."""
    from kai_flows.pipelines import PIPELINES

    table = Table("pipeline", "inputs", "parameters (default)", "tasks")
    for name, build in sorted(PIPELINES.items()):
        p = build()
        params = ", ".join(f"{k}={v.default}" if v.default is not None else k for k, v in p.params.items())
        table.add_row(name, ", ".join(p.inputs), params, str(len(p.tasks)))
    Console(file=sys.stdout).print(table)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_cmd)
    app.command("pipelines")(pipelines_cmd)
