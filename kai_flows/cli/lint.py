"""`kai-flows lint [PATH ...]`: one line per problem and exit 1, or a one-line OK summary."""

from __future__ import annotations

from pathlib import Path

import typer

from kai_flows.policy import PolicyError


def lint_cmd(
    paths: list[Path] = typer.Argument(None, help="YAML files or folders (recursed); default ./workflow_templates/, "
                                        "else the templates shipped with kai-flows"),
    images: Path | None = typer.Option(None, "--images", help="Dockerfile folder, images/<name>/Dockerfile; default "
                                                              "the images/ folder nearest each linted file"),
    require_digests: bool = typer.Option(False, "--require-digests", help="refuse any image not pinned by a registry "
                                         "digest (@sha256:...), as a production deploy must"),
) -> None:
    """Check Argo and Kubernetes YAML: Argo's schema (strict), argo lint's rules, Kubernetes schemas, Kai's policy."""
    # Imported here: the coordinator's image runs this CLI without lint's schemas (kubernetes-validate).
    from kai_flows.lint import LintError, lint_result
    from kai_flows.resources import templates_dir

    targets = paths or [Path("workflow_templates") if Path("workflow_templates").is_dir() else templates_dir()]
    try:
        result = lint_result(targets, images_dir=images, require_digests=require_digests)
    except (LintError, PolicyError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    for problem in result.problems:
        typer.echo(str(problem))
    if result.problems:
        files = len({p.file for p in result.problems})
        typer.echo(f"{len(result.problems)} problem(s) in {files} file(s)", err=True)
        raise typer.Exit(1)
    if result.files == 0:
        typer.echo(f"error: no .yaml/.yml files under {', '.join(map(str, targets))}", err=True)
        raise typer.Exit(2)
    typer.echo(f"OK: {result.objects} objects in {result.files} files, no problems")


def register(app: typer.Typer) -> None:
    app.command("lint")(lint_cmd)
