"""One coordinator replica: the admission loop, the HTTP API and /metrics in one process.

The loop runs in a thread beside uvicorn; SIGTERM (a rolling update, a scale-down) stops uvicorn, which stops
the loop after its current pass. Jobs the replica followed are adopted by the others when its leases run out,
or by its successor at once (same claimer name: a StatefulSet's or the pod's name).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from kai_flows.ledger.coordinator import Coordinator
from kai_flows.ledger.errors import LedgerError
from kai_flows.ledger.runner import WorkflowRunner
from kai_flows.service.api import create_app
from kai_flows.service.config import CoordinatorConfig

log = logging.getLogger(__name__)


class ServiceError(LedgerError):
    """The service cannot start (a port taken, say); the message names what and where."""


def _bind(what: str, addr: str, port: int) -> socket.socket:
    """The listening socket, bound now: a taken port is one line naming it, not uvicorn's log and exit."""
    sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        raise ServiceError(f"cannot serve {what} on {addr}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn re-raises the stopping signal after its shutdown, which would kill the process before the loop
    stopped and the runner closed (the local backend's embedded store would outlive it): our handlers instead."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ServeOptions:
    api_addr: str = "0.0.0.0"
    api_port: int = 8080
    metrics_addr: str = "0.0.0.0"
    metrics_port: int = 8081
    claimer: str | None = None


def make_coordinator(database_url: str, runner: WorkflowRunner, config: CoordinatorConfig,
                     claimer: str | None) -> Coordinator:
    """The admission loop with the config's queues, timings and back-pressure."""
    return Coordinator(
        database_url, runner, config.queue_classes(), config.poll_interval_seconds, claimer=claimer,
        lease_seconds=config.lease_seconds, unschedulable_after=config.backpressure.unschedulable_after_seconds,
        refusal_hold=config.backpressure.refusal_hold_seconds,
    )


def serve(database_url: str, runner: WorkflowRunner, config: CoordinatorConfig, token: str,
          opts: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT."""
    coordinator = make_coordinator(database_url, runner, config, opts.claimer)
    api_socket = _bind("the API", opts.api_addr, opts.api_port)
    try:
        metrics_port = coordinator.serve_metrics(opts.metrics_port, opts.metrics_addr)
    except OSError as e:
        api_socket.close()
        raise ServiceError(f"cannot serve /metrics on {opts.metrics_addr}:{opts.metrics_port}: {e.strerror}") from None
    app = create_app(database_url, config, token, registry=coordinator.metrics.registry, claimer=coordinator.claimer)
    server = _Server(uvicorn.Config(app, host=opts.api_addr, port=opts.api_port, log_level="warning",
                                    access_log=False, lifespan="on"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    stop = threading.Event()
    loop = threading.Thread(target=coordinator.run, args=(stop,), name="coordinator-loop", daemon=True)
    loop.start()
    log.info("coordinator %s: API on http://%s:%d, metrics on http://%s:%d/metrics", coordinator.claimer,
             opts.api_addr, api_socket.getsockname()[1], opts.metrics_addr, metrics_port)
    try:
        server.run(sockets=[api_socket])  # returns once SIGTERM/SIGINT asked it to stop, after open requests finished
    finally:
        stop.set()
        loop.join(timeout=config.poll_interval_seconds + 30)
