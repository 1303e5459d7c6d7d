"""`kai-flows run` (the local engine) and `kai-flows runs` (past runs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            console.print(f"[red]error:[/red] {flag} {escape(repr(item))} must look like NAME=VALUE")
            raise typer.Exit(2)
        out[name] = value
    return out


def run_cmd(
    pipeline: str = typer.Argument(..., help="pipeline name (workflow_templates/<name>.yaml) or a YAML path"),
    param: list[str] = typer.Option([], "--param", "-p", help="workflow parameter NAME=VALUE"),
    input_: list[str] = typer.Option([], "--input", "-i", help="pipeline input folder NAME=DIR"),
    out: Path = typer.Option(..., "--out", "-o", help="where outputs, run.json and logs go"),
    parallelism: int = typer.Option(None, "--parallelism", help="steps at once (default: CPU cores)"),
    store_dir: Path = typer.Option(None, "--store-dir", help="embedded SeaweedFS data folder"),
    s3_endpoint: str = typer.Option(None, "--s3-endpoint", envvar="KAI_S3_ENDPOINT", help="use this S3 instead"),
    s3_access_key: str = typer.Option(None, "--s3-access-key", envvar="KAI_S3_ACCESS_KEY"),
    s3_secret_key: str = typer.Option(None, "--s3-secret-key", envvar="KAI_S3_SECRET_KEY"),
    s3_bucket: str = typer.Option(None, "--s3-bucket", envvar="KAI_S3_BUCKET"),
    resume: str = typer.Option(None, "--resume", help="re-use the Succeeded steps of this earlier run"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    cold: bool = typer.Option(False, "--cold", help="start every step as a fresh process (no warm starts)"),
    runtime: str = typer.Option("process", "--runtime", help="process: steps as host processes (fast, no images); "
                                "container: each step in its image with its pod's security context and limits"),
    engine: str = typer.Option(None, "--engine", help="container engine for --runtime container (podman|docker; "
                               "default: the one on PATH)"),
) -> None:
    """Run a compiled pipeline on this machine (steps as host processes or in their images, artifacts in S3).

    Exit codes: 0 Succeeded; 1 the run Failed or Errored; 2 a bad request (nothing ran); 3 the run Succeeded but the
    quality gate rejected the photos (the rejection report is the output); 130 interrupted before it started."""
    from kai_flows.engine.model import EngineError  # imported here: `kai-flows --help` stays fast
    from kai_flows.engine.runner import run_pipeline
    from kai_flows.store import S3Config, StoreError

    try:
        store = None
        if s3_endpoint:
            missing = [n for n, v in (("--s3-access-key", s3_access_key), ("--s3-secret-key", s3_secret_key),
                                      ("--s3-bucket", s3_bucket)) if not v]
            if missing:
                raise EngineError(f"--s3-endpoint needs {', '.join(missing)} too")
            store = S3Config.checked(endpoint=s3_endpoint, access_key=s3_access_key, secret_key=s3_secret_key,
                                     bucket=s3_bucket)
        result = run_pipeline(pipeline, parameters=_pairs(param, "--param"), inputs={
            k: Path(v) for k, v in _pairs(input_, "--input").items()}, out=out, parallelism=parallelism,
            store=store, store_dir=store_dir, resume=resume, progress=not quiet,
            warm_starts=not cold, runtime=runtime, container_engine=engine)
    except (EngineError, StoreError, ValueError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red] before the run started; nothing ran")
        raise typer.Exit(130) from None
    style = "green" if result.succeeded else "red"
    console.print(f"[{style}]{result.name} {result.phase}[/{style}]" + (f": {escape(result.message)}"
                                                                          if result.message else ""))
    for name, path in result.outputs.items():
        console.print(f"  output {name}: {escape(str(path)) if path else '(not produced)'}")
    console.print(f"  record: {escape(str(result.record))}")
    for w in result.warnings:
        console.print(f"  [yellow]warning:[/yellow] {escape(w)}")
    if not result.succeeded:
        raise typer.Exit(1)
    rejection = result.outputs.get("rejection")
    if rejection is not None:
        for reason in _rejection_reasons(rejection):
            console.print(f"[yellow]rejected:[/yellow] {escape(reason)}")
        console.print(f"  the photos were rejected; see {escape(str(rejection / 'index.html'))}")
        raise typer.Exit(3)


def _rejection_reasons(report: Path) -> list[str]:
    """The quality gate's reasons, from the rejection report's manifest."""
    try:
        manifest = json.loads((report / "manifest.json").read_text())
    except (OSError, ValueError):
        return ["(the rejection report has no readable manifest.json)"]
    return [str(f.get("message", f)) for f in manifest.get("failures") or []] or ["(no reason given)"]


def runs_cmd(
    show: str = typer.Argument(None, metavar="[show RUN]", help="'show' followed by a run name"),
    run: str = typer.Argument(None, hidden=True),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List past local runs, or `runs show RUN` for one run's record."""
    from kai_flows.engine.model import EngineError
    from kai_flows.engine.records import read_run
    from kai_flows.engine.runner import cache_dir, runs_table

    if show is not None:
        if show != "show" or not run:
            console.print("[red]error:[/red] usage: kai-flows runs [show RUN]")
            raise typer.Exit(2)
        try:
            record = read_run(cache_dir(), run)
        except EngineError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
        if as_json:
            print(json.dumps(record, indent=1))
            return
        kai = record.get("kai", {})
        console.print(f"{kai.get('name')} ({kai.get('template')}): {record.get('phase')} "
                      f"{record.get('startedAt', '')} -> {record.get('finishedAt', '')} {record.get('message', '')}",
                      markup=False)
        table = Table()
        for col in ("node", "phase", "timeline", "wall s", "cpu s", "peak MiB", "message"):
            table.add_column(col, no_wrap=col in ("node", "timeline"))
        nodes = list(record.get("nodes", {}).values())
        bars = timeline_bars(nodes, record.get("startedAt"), record.get("finishedAt"))
        for n in nodes:
            if n.get("type") not in ("Pod", "Skipped") and n.get("phase") == "Succeeded":
                continue  # DAG and fan-out group nodes: their children carry the figures
            k = n.get("kai", {})
            peak = k.get("peakMemoryBytes")
            table.add_row(Text(n.get("displayName", "")), n.get("phase", ""), bars.get(n.get("id", ""), ""),
                          str(k.get("wallSeconds", "")), str(k.get("cpuSeconds", "")),
                          f"{peak / 2**20:.0f}{' !' if k.get('overMemoryLimit') else ''}" if peak else "",
                          Text(n.get("message", "")[:60]))
        Console().print(table)
        return
    rows = runs_table()
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = Table()
    for col in ("run", "pipeline", "phase", "started", "progress", "message"):
        table.add_column(col, no_wrap=col in ("run", "started"))
    for r in rows:
        table.add_row(r["name"], r["pipeline"], r["phase"], r["started"], r["progress"], r["message"][:60])
    Console().print(table)


def timeline_bars(nodes: list[dict], started: str | None, finished: str | None, width: int = 32) -> dict[str, str]:
    """A text Gantt chart: for each pod that ran, a bar placed where it ran within the whole run."""
    from datetime import datetime

    def t(value: str | None) -> float | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None

    t0, t1 = t(started), t(finished)
    if t0 is None or t1 is None or t1 <= t0:
        return {}
    bars = {}
    for n in nodes:
        a, b = t(n.get("startedAt")), t(n.get("finishedAt"))
        if n.get("type") != "Pod" or a is None or b is None:
            continue
        lo = int((a - t0) / (t1 - t0) * width)
        hi = max(lo + 1, round((b - t0) / (t1 - t0) * width))
        bars[n.get("id", "")] = " " * lo + "█" * (min(hi, width) - lo) + " " * (width - min(hi, width))
    return bars


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("runs")(runs_cmd)
