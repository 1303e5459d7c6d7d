"""`kai-flows migrate` and `kai-flows coordinator`: the ledger's commands (wired in by `register`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
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
    config_file: Annotated[str | None, typer.Option(
        "--config", envvar="KAI_COORDINATOR_CONFIG",
        help="Coordinator settings (YAML: queues, tiers, quality tiers, timings, back-pressure); default: the "
             "policy's. In a cluster: the ConfigMap kai-coordinator-config.")] = None,
    api_port: Annotated[int, typer.Option("--api-port", help="Serve the HTTP API here (0: a free port).")] = 8080,
    api_addr: Annotated[str, typer.Option("--api-addr")] = "0.0.0.0",
    no_api: Annotated[bool, typer.Option("--no-api", help="Admission loop and /metrics only.")] = False,
    token_file: Annotated[str | None, typer.Option(
        "--token-file", help="The API's bearer token (default: $KAI_API_TOKEN).")] = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Serve /metrics here (0: a free port).")] = 8081,
    metrics_addr: Annotated[str, typer.Option("--metrics-addr")] = "0.0.0.0",
    poll_interval: Annotated[float | None, typer.Option(
        "--poll-interval", min=0.01, help="Seconds between passes (default: the config's, 2).")] = None,
    lease_seconds: Annotated[float | None, typer.Option(
        "--lease-seconds", min=0.1, help="Lease on claimed jobs (default: the config's, 30).")] = None,
    claimer: Annotated[str | None, typer.Option(
        "--claimer", envvar="KAI_CLAIMER", help="Identity of this coordinator (in a cluster: the pod name).")] = None,
    task_queue_config: Annotated[
        str | None, typer.Option("--task-queue-config", help="Queue classes as JSON (overrides the config's).")
    ] = None,
    state_dir: Annotated[str | None, typer.Option(
        "--state-dir", help="State folder of the local backend (job folders, run records).")] = None,
    replicas: Annotated[int, typer.Option(
        "--replicas", min=1, help="Run this many replicas (ports counted up from --api-port/--metrics-port).")] = 1,
) -> None:
    """Claim queued jobs by queue class, submit them, follow them, record every transition; serve the API."""
    from kai_flows.ledger.db import connect
    from kai_flows.ledger.factory import make_runner
    from kai_flows.policy import load_policy, parse_task_queue_config
    from kai_flows.service.auth import TokenError
    from kai_flows.service.config import CoordinatorConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = CoordinatorConfig.load(config_file) if config_file else CoordinatorConfig.from_policy(load_policy())
        if task_queue_config or poll_interval is not None or lease_seconds is not None:
            raw = config.model_dump(mode="json")
            if task_queue_config:
                queues = parse_task_queue_config(task_queue_config)
                raw["queues"] = {n: {"concurrency": q.concurrency, "weight": q.weight} for n, q in queues.items()}
                for t in raw["tiers"].values():  # a tier whose class is gone takes the first one given
                    t["queue"] = t["queue"] if t["queue"] in queues else next(iter(queues))
            if poll_interval is not None:
                raw["poll_interval_seconds"] = poll_interval
            if lease_seconds is not None:
                raw["lease_seconds"] = lease_seconds
            config = CoordinatorConfig.parse(raw, "coordinator settings")
        # the local backend's engine processes read the queues from the environment: one config for all
        os.environ["KAI_TASK_QUEUE_CONFIG"] = config.task_queue_config()
        connect(database_url).close()  # fail fast, with a clear message, on a wrong URL
        token = None if no_api else _token(token_file, state_dir, replicas)
    except (LedgerError, PolicyError, TokenError) as e:
        raise _fail(e) from None
    if replicas > 1:
        raise typer.Exit(_run_replicas(database_url, backend, config_file, config, token, api_port, api_addr,
                                       metrics_port, metrics_addr, claimer, state_dir, replicas, no_api))
    try:
        runner = make_runner(backend, state_dir=state_dir)
    except LedgerError as e:
        raise _fail(e) from None
    try:
        if no_api:
            _loop_only(database_url, runner, config, claimer, metrics_port, metrics_addr)
        else:
            from kai_flows.service.server import ServeOptions, serve

            assert token is not None
            serve(database_url, runner, config, token, ServeOptions(api_addr, api_port, metrics_addr, metrics_port,
                                                                    claimer))
    except LedgerError as e:
        raise _fail(e) from None
    finally:
        # the local backend's embedded store stops here; running jobs are followed again by the next coordinator
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def _token(token_file: str | None, state_dir: str | None, replicas: int) -> str:
    """The API token: --token-file or $KAI_API_TOKEN; for several local replicas without one, made and kept."""
    from kai_flows.service.auth import load_token
    from kai_flows.service.replicas import local_token

    if token_file or os.environ.get("KAI_API_TOKEN") or replicas == 1:
        return load_token(token_file)

    state = _state_dir(state_dir)
    token = local_token(state)
    typer.echo(f"API token (made for this machine): {state / 'api-token'}", err=True)
    return token


def _state_dir(state_dir: str | None) -> Path:
    """The local backend's state folder: --state-dir, $KAI_LOCAL_BACKEND_DIR, or the engine cache's."""
    from kai_flows.engine.runner import cache_dir

    return Path(state_dir or os.environ.get("KAI_LOCAL_BACKEND_DIR") or cache_dir() / "coordinator")


def _loop_only(database_url: str, runner, config, claimer: str | None, metrics_port: int,  # type: ignore[no-untyped-def]
               metrics_addr: str) -> None:
    from kai_flows.service.server import make_coordinator

    coordinator = make_coordinator(database_url, runner, config, claimer)
    port = coordinator.serve_metrics(metrics_port, metrics_addr)
    typer.echo(f"coordinator {coordinator.claimer}: metrics on http://{metrics_addr}:{port}/metrics", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    coordinator.run(stop)


def _run_replicas(database_url: str, backend: str, config_file: str | None, config, token: str | None,  # type: ignore[no-untyped-def]
                  api_port: int, api_addr: str, metrics_port: int, metrics_addr: str, claimer: str | None,
                  state_dir: str | None, replicas: int, no_api: bool) -> int:
    import socket
    import tempfile

    from kai_flows.service.replicas import supervise

    env = dict(os.environ, KAI_DATABASE_URL=database_url)
    if token:
        env["KAI_API_TOKEN"] = token
    with tempfile.TemporaryDirectory(prefix="kai-coordinator-") as tmp:
        config_path = Path(config_file) if config_file else Path(tmp) / "coordinator.yaml"
        if not config_file:
            config_path.write_text(config.to_yaml())
        argv = ["--backend", backend, "--config", str(config_path), "--api-addr", api_addr,
                "--metrics-addr", metrics_addr]
        if no_api:
            argv.append("--no-api")
        server = None
        if backend == "local":
            from kai_flows.store import EmbeddedSeaweedFS

            state = _state_dir(state_dir)
            argv += ["--state-dir", str(state)]
            if "KAI_S3_ENDPOINT" not in env:  # one store for every replica, so any of them can follow any job
                server = EmbeddedSeaweedFS(state / "store")
                server.start()
                server.store(warm_up=True)
                env.update(server.config().to_env())
        elif state_dir:
            argv += ["--state-dir", state_dir]
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            return supervise(argv, replicas, api_port=api_port, metrics_port=metrics_port,
                             claimer=claimer or socket.gethostname(), env=env, stop=stop)
        finally:
            if server is not None:
                server.stop()


def register(app: typer.Typer) -> None:
    """Add `migrate` and `coordinator` to the kai-flows CLI."""
    app.command("migrate")(migrate_cmd)
    app.command("coordinator")(coordinator_cmd)


if __name__ == "__main__":  # python -m kai_flows.cli.ledger: the same commands without the full CLI
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app()
