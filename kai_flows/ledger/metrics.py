"""Prometheus metrics of the ledger, served on /metrics by the coordinator.

Gauges are refreshed from the ledger itself (so they agree across several coordinators); the duration
histogram and the failure counter count what this coordinator recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kai_flows.ledger.models import Job

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


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

    def refresh(self, conn: psycopg.Connection, queue_classes: Iterable[str]) -> None:
        counts = {(r["queue_class"], r["status"]): r["n"] for r in conn.execute(
            """SELECT queue_class, status, count(*) AS n FROM jobs
                WHERE status IN ('queued', 'submitted', 'running') GROUP BY queue_class, status"""
        ).fetchall()}
        for q in set(queue_classes) | {k[0] for k in counts}:
            self.queue_depth.labels(q).set(counts.get((q, "queued"), 0))
            self.running.labels(q).set(counts.get((q, "running"), 0))
            self.in_flight.labels(q).set(counts.get((q, "running"), 0) + counts.get((q, "submitted"), 0))

    def finished(self, job: Job) -> None:
        start = job.submitted_at or job.created_at
        if job.finished_at is not None:
            self.duration.labels(job.queue_class, job.status.value).observe(
                max(0.0, (job.finished_at - start).total_seconds())
            )
        if job.status == "failed":
            self.failures.labels(job.queue_class).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve /metrics in a daemon thread; port 0 picks a free port (see the returned server's server_port)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
