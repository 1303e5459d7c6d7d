"""`kai-flows images build|list`: the step images, built as the compiled templates reference them."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG

console = Console(stderr=True)
app = typer.Typer(help="Build, push and list the step images.", no_args_is_help=True)


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.0f} MB"


@app.command("build")
def build_cmd(
    registry: str = typer.Option(DEFAULT_REGISTRY, help="images are <registry>/kai/<family>:<tag>, as compiled"),
    tag: str = typer.Option(DEFAULT_TAG, help="image tag"),
    engine: str = typer.Option(None, "--engine", help="podman or docker (default: the one on PATH)"),
    only: list[str] = typer.Option([], "--only", help="build only this family (repeatable); missing parents too"),
    push: bool = typer.Option(False, "--push", help="push each image after it is built"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands; build nothing"),
    context: Path = typer.Option(None, "--context", help="the checkout to build from (default: the one around "
                                 "the current folder)"),
    log: Path = typer.Option(None, "--log", help="where the engine's build output goes (default: a temp file)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="rebuild every layer instead of reusing cached ones"),
    lock: Path | None = typer.Option(None, "--lock", help="record each built image's ID (and with --push its registry "
                              "digest) in this JSON file, for `kai-flows compile|deploy --image-lock`"),
) -> None:
    """Build base, then every step family in dependency order, tagged as `kai-flows compile` references them."""
    import tempfile

    from kai_flows import images
    from kai_flows.compile import image_ref
    from kai_flows.containers import ContainerEngineError, find_engine

    try:
        eng = find_engine(engine) if not dry_run else _engine_for_dry_run(engine)
        checkout = images.find_checkout(context)
        fams = images.families(checkout)
        chosen = images.select(fams, only, (lambda r: False) if dry_run else eng.image_exists,
                               lambda f: image_ref(f, registry, tag))
        if dry_run:
            for fam in chosen:
                print(shlex.join(images.build_command(eng, checkout, fam, registry, tag, no_cache)))
                if push:
                    print(shlex.join(eng.command("push", image_ref(fam.name, registry, tag))))
            if lock:
                print(f"# would record {len(chosen)} image(s) in {lock}")
            return
        base = images.python_base(fams["base"].dockerfile) if "base" in fams else None
        if base and any(f.name == "base" for f in chosen) and not eng.image_exists(base):
            raise images.ImageError(
                f"{base} is not present in {eng.kind}; pull it ({eng.kind} pull {base}), or where no registry can "
                "be reached build the local stand-in: images/python-standin/build.sh (make images does)")
        log_path = log or Path(tempfile.mkstemp(prefix="kai-images-", suffix=".log")[1])
        built: list[images.Built] = []
        for i, fam in enumerate(chosen, 1):
            ref = image_ref(fam.name, registry, tag)
            with console.status(f"[{i}/{len(chosen)}] building {escape(ref)} (log: {log_path})"):
                b = images.build(eng, checkout, fam, registry, tag, log_path, no_cache)
            console.print(f"[{i}/{len(chosen)}] built {escape(ref)} in {b.seconds:.0f} s, {_mb(b.size)}")
            digest = None
            if push:
                with console.status(f"pushing {escape(ref)}"):
                    digest = images.push(eng, ref)
                console.print(f"      pushed {escape(ref)}@{digest}")
            if lock:  # after each image, so a failure later keeps what was built and pushed so far
                entry = images.LockedImage(ref, images.image_id(eng, ref), digest)
                images.record_lock(lock, registry, tag, {fam.name: entry})
            built.append(b)
    except (images.ImageError, ContainerEngineError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    base_size = next((b.size for b in built if b.family == "base"), None) or images.image_size(
        eng, image_ref("base", registry, tag))
    table = Table(title=f"{registry}/kai/<family>:{tag} ({eng.kind}; sizes as the engine reports them)")
    for col in ("image", "size", "over parent", "over base", "build s"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for b in built:
        over_parent = b.size - b.parent_size if b.parent_size is not None else None
        over_base = b.size - base_size if base_size is not None and b.family != "base" else None
        table.add_row(f"kai/{b.family}", _mb(b.size), _mb(over_parent), _mb(over_base), f"{b.seconds:.0f}")
    Console().print(table)
    if lock:
        pinned = len(images.read_lock(lock).digests())
        console.print(f"recorded in {escape(str(lock))}: {pinned} image(s) with a registry digest"
                      + ("" if push else " (none new without --push)"))


def _engine_for_dry_run(name: str | None):  # -> ContainerEngine
    """A dry run prints commands even where no engine is installed (e.g. to review them on a laptop)."""
    from kai_flows.containers import ContainerEngine, ContainerEngineError, find_engine

    try:
        return find_engine(name)
    except ContainerEngineError:
        return ContainerEngine(name or "docker", name or "docker")


@app.command("list")
def list_cmd(
    templates: Path = typer.Option(None, "--templates", help="folder of compiled WorkflowTemplates"),
    engine: str = typer.Option(None, "--engine", help="podman or docker (default: the one on PATH)"),
) -> None:
    """The images the compiled templates reference, and which of them exist locally."""
    from kai_flows import images
    from kai_flows.containers import ContainerEngineError, find_engine
    from kai_flows.resources import templates_dir

    folder = templates or (Path("workflow_templates") if Path("workflow_templates").is_dir() else templates_dir())
    refs = images.referenced_images(folder)
    try:
        eng = find_engine(engine)
    except ContainerEngineError as e:
        eng = None
        console.print(f"[yellow]{escape(str(e))}[/yellow]")
    table = Table(title=f"images referenced by {folder}")
    for col in ("image", "pipelines", "local", "size"):
        table.add_column(col)
    missing = 0
    for ref, pipelines in sorted(refs.items()):
        size = images.image_size(eng, ref) if eng else None
        missing += size is None
        table.add_row(ref, ", ".join(pipelines), "[green]yes[/green]" if size is not None else "[red]no[/red]",
                      _mb(size))
    Console().print(table)
    if missing and eng:
        console.print(f"{missing} image(s) missing: kai-flows images build")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="images")
