"""`kai-flows migrate` and `kai-flows coordinator`: the ledger's commands (wired in by `register`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Annotated

import typer

from kai_flows.ledger.errors import LedgerError
from kai_flows.policy import PolicyError

DatabaseUrl = Annotated[
    str,
    typer.Option("--database-url", envvar="KAI_DATABASE_URL", help="PostgreSQL URL (default: $KAI_DATABASE_URL)."),
]


def _fail(e: Exception) -> typer.Exit:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def migrate_cmd(
    database_url: DatabaseUrl,
    status: Annotated[bool, typer.Option("--status", help="Show each migration's state; apply nothing.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be applied; apply nothing.")] = False,
    directory: Annotated[
        str | None, typer.Option("--directory", help="Migrations folder (default: $KAI_MIGRATIONS_DIR, the project's).")
    ] = None,
) -> None:
    """Apply the pending SQL migrations in order, each exactly once."""
    from kai_flows.ledger.migrate import migrate
    from kai_flows.ledger.migrate import status as migration_status

    try:
        if status:
            states = migration_status(database_url, directory=directory)
            for s in states:
                when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else ""
                typer.echo(f"{s.state:8} {s.name} {when}".rstrip())
            if any(s.state in ("changed", "missing") for s in states):
                raise typer.Exit(1)
            return
        report = migrate(database_url, directory=directory, dry_run=dry_run)
    except LedgerError as e:
        raise _fail(e) from None
    verb = "would apply" if dry_run else "applied"
    for name in report.applied:
        typer.echo(f"{verb} {name}")
    typer.echo(f"{len(report.applied)} {verb}, {len(report.already_applied)} already applied ({report.directory})")


def coordinator_cmd(
    database_url: DatabaseUrl,
    backend: Annotated[str, typer.Option(
        "--backend", help="local, argo, or module:callable (a runner of your own, e.g. the tests' fake).")] = "local",
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Serve /metrics here (0: a free port).")] = 9090,
    metrics_addr: Annotated[str, typer.Option("--metrics-addr")] = "0.0.0.0",
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.01)] = 2.0,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", min=0.1)] = 30.0,
    claimer: Annotated[str | None, typer.Option("--claimer", help="Identity of this coordinator.")] = None,
    task_queue_config: Annotated[
        str | None, typer.Option("--task-queue-config", help="Queue classes as JSON (default: the policy's).")
    ] = None,
    state_dir: Annotated[str | None, typer.Option(
        "--state-dir", help="State folder of the local backend (job folders, run records).")] = None,
) -> None:
    """Claim queued jobs by queue class, submit them, follow them and record every transition."""
    from kai_flows.ledger.coordinator import Coordinator
    from kai_flows.ledger.db import connect
    from kai_flows.ledger.factory import make_runner
    from kai_flows.policy import load_policy, parse_task_queue_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        queues = parse_task_queue_config(task_queue_config) if task_queue_config else load_policy().queues
        if task_queue_config:
            # the local backend's engine processes read the policy from the environment: one config for all
            os.environ["KAI_TASK_QUEUE_CONFIG"] = task_queue_config
        connect(database_url).close()  # fail fast, with a clear message, on a wrong URL
        runner = make_runner(backend, state_dir=state_dir)
        coordinator = Coordinator(
            database_url, runner, queues, poll_interval, claimer=claimer, lease_seconds=lease_seconds,
        )
    except (LedgerError, PolicyError) as e:
        raise _fail(e) from None
    port = coordinator.serve_metrics(metrics_port, metrics_addr)
    typer.echo(f"coordinator {coordinator.claimer}: metrics on http://{metrics_addr}:{port}/metrics", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        coordinator.run(stop)
    except LedgerError as e:
        raise _fail(e) from None
    finally:
        # the local backend's embedded store stops here; running jobs are followed again by the next coordinator
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def register(app: typer.Typer) -> None:
    """Add `migrate` and `coordinator` to the kai-flows CLI."""
    app.command("migrate")(migrate_cmd)
    app.command("coordinator")(coordinator_cmd)


if __name__ == "__main__":  # python -m kai_flows.cli.ledger: the same commands without the full CLI
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app()
