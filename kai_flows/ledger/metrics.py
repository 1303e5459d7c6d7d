"""Prometheus metrics of the ledger, served on /metrics by the coordinator.

Gauges are refreshed from the ledger itself (so they agree across several coordinators); the duration
histogram and the failure counter count what this coordinator recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kai_flows.ledger import holds, jobs
from kai_flows.ledger.holds import HOLD_REASONS
from kai_flows.ledger.models import Job

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800)


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("kai_queue_depth", "Jobs waiting to be admitted", ["queue_class"], registry=r)
        self.running = Gauge("kai_jobs_running", "Jobs whose workflow is running", ["queue_class"], registry=r)
        self.in_flight = Gauge(
            "kai_jobs_in_flight", "Jobs submitted or running (what the concurrency cap counts)", ["queue_class"],
            registry=r,
        )
        self.duration = Histogram(
            "kai_job_duration_seconds", "Job duration from submission to its final status",
            ["queue_class", "status"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.failures = Counter("kai_job_failures_total", "Jobs that ended failed", ["queue_class"], registry=r)
        self.finished_total = Counter(
            "kai_jobs_finished_total", "Jobs this coordinator saw end, by final status", ["queue_class", "status"],
            registry=r,
        )
        self.admitted_total = Counter(
            "kai_jobs_admitted_total", "Jobs this coordinator admitted (claimed for submission)", ["queue_class"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "kai_queue_wait_seconds", "Time from a job's creation to its admission", ["queue_class"],
            buckets=WAIT_BUCKETS, registry=r,
        )
        self.held = Gauge(
            "kai_admission_held", "1 while a queue class admits nothing, by reason (back-pressure)",
            ["queue_class", "reason"], registry=r,
        )

    def refresh(self, conn: psycopg.Connection, queue_classes: Iterable[str]) -> None:
        counts = jobs.counts_by_class(conn)
        for q in set(queue_classes) | {k[0] for k in counts}:
            self.queue_depth.labels(q).set(counts.get((q, "queued"), 0))
            self.running.labels(q).set(counts.get((q, "running"), 0))
            self.in_flight.labels(q).set(counts.get((q, "running"), 0) + counts.get((q, "submitted"), 0))
        active = holds.active_holds(conn)
        self.held.clear()
        for q in set(queue_classes) | set(active):
            reasons = {h.reason for h in active.get(q, [])}
            for reason in HOLD_REASONS:
                self.held.labels(q, reason).set(1 if reason in reasons else 0)

    def admitted(self, job: Job) -> None:
        self.admitted_total.labels(job.queue_class).inc()
        if job.submitted_at is not None:
            waited = (job.submitted_at - job.created_at).total_seconds()
            self.queue_wait.labels(job.queue_class).observe(max(0.0, waited))

    def finished(self, job: Job) -> None:
        start = job.submitted_at or job.created_at
        if job.finished_at is not None:
            self.duration.labels(job.queue_class, job.status.value).observe(
                max(0.0, (job.finished_at - start).total_seconds())
            )
        self.finished_total.labels(job.queue_class, job.status.value).inc()
        if job.status == "failed":
            self.failures.labels(job.queue_class).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve /metrics in a daemon thread; port 0 picks a free port (see the returned server's server_port)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
