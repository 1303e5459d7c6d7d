"""The coordinator's HTTP API (FastAPI): submit, read, list and cancel jobs; queue depths; health.

Every replica serves the same API over the shared ledger, so a job submitted through one is read or cancelled
through any other. Routes under /v1 need the bearer token (auth.py). Submission is idempotent with an
`Idempotency-Key` header: a retry with the same key and request returns the first job (200 instead of 201), the
same key with another request is a 409. Request metrics (count and latency by route) go to the registry that
/metrics serves on its own port.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated
from uuid import UUID

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from kai_flows import __version__
from kai_flows.ledger import holds, jobs
from kai_flows.ledger.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    UnknownQueueClass,
    UnknownTier,
)
from kai_flows.ledger.migrate import status as migration_status
from kai_flows.ledger.models import JobStatus
from kai_flows.service.auth import BearerAuth
from kai_flows.service.config import CoordinatorConfig
from kai_flows.service.schemas import HoldView, JobList, JobRequest, JobView, Problem, QueueList, QueueView
from kai_flows.service.validation import RequestInvalid, check_request, warm_up

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ERRORS = {401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}, 422: {"model": Problem}}


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kai_api_requests_total", "API requests by route and status code",
                                ["method", "route", "code"], registry=registry)
        self.latency = Histogram("kai_api_request_duration_seconds", "API request latency by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)


def create_app(database_url: str, config: CoordinatorConfig, token: str, *,
               registry: CollectorRegistry | None = None, claimer: str = "api", pool_size: int = 8) -> FastAPI:
    """The API over the ledger at `database_url`; `registry`: where its request metrics go (/metrics)."""
    pool = ConnectionPool(database_url, min_size=1, max_size=pool_size, open=False, timeout=10,
                          kwargs={"autocommit": True, "row_factory": dict_row}, name="kai-api")
    api_metrics = ApiMetrics(registry or CollectorRegistry())
    policy = config.policy()
    auth = Depends(BearerAuth(token))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        pool.open(wait=False)
        warm_up()
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="kai-flows coordinator", version=__version__, lifespan=lifespan)

    @contextmanager
    def connection() -> Iterator[psycopg.Connection]:
        try:
            with pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as e:
            raise HTTPException(503, f"the ledger database is unavailable: {str(e).splitlines()[0]}") from None

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        api_metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        api_metrics.latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        return JSONResponse({"detail": f"{where}: {err['msg']}"}, status_code=422)

    # -- health ------------------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Alive: the process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Problem}})
    def readyz() -> dict[str, str]:
        """Ready: the ledger database answers and every migration is applied (readiness)."""
        try:
            states = migration_status(database_url)
        except (LedgerError, psycopg.Error) as e:
            raise HTTPException(503, f"the ledger database is unavailable: {str(e).splitlines()[0]}") from None
        if not_current := [f"{s.name} ({s.state})" for s in states if s.state != "applied"]:
            raise HTTPException(503, f"migrations not current: {', '.join(not_current)}; run `kai-flows migrate`")
        return {"status": "ready", "migrations": str(len(states))}

    # -- jobs ---------------------------------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=201, dependencies=[auth], responses={200: {"model": JobView}, **ERRORS},
              tags=["jobs"])
    def submit(req: JobRequest, response: Response,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> JobView:
        """Queue a job (checked against the pipeline's typed parameters first)."""
        try:
            check_request(req, config, policy)
        except RequestInvalid as e:
            raise HTTPException(422, str(e)) from None
        with connection() as conn:
            try:
                job, created = jobs.enqueue_once(
                    conn, req.pipeline, req.parameters, tier=req.tier, queue_class=req.queue, priority=req.priority,
                    input_uri=req.input_uri, output_uri=req.output_uri, tenant=req.tenant,
                    idempotency_key=idempotency_key, policy=policy)
            except IdempotencyConflict as e:
                raise HTTPException(409, str(e)) from None
            except (UnknownTier, UnknownQueueClass, LedgerError) as e:
                raise HTTPException(422, str(e)) from None
        if not created:
            response.status_code = 200
        return JobView.of(job)

    @app.get("/v1/jobs/{job_id}", dependencies=[auth], responses=ERRORS, tags=["jobs"])
    def get(job_id: UUID) -> JobView:
        """A job with its status history and its outputs."""
        with connection() as conn:
            try:
                job = jobs.get_job(conn, job_id)
            except JobNotFound as e:
                raise HTTPException(404, str(e)) from None
            return JobView.of(job, jobs.history(conn, job.id), jobs.outputs(conn, job.id))

    @app.get("/v1/jobs", dependencies=[auth], responses=ERRORS, tags=["jobs"])
    def list_(status: JobStatus | None = None, queue: str | None = None, tenant: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobList:
        """Jobs by state, queue class and tenant, newest first."""
        if queue is not None and queue not in config.queues:
            raise HTTPException(422, f"queue: unknown queue class {queue!r}; known: {', '.join(sorted(config.queues))}")
        with connection() as conn:
            found = jobs.list_jobs(conn, status=status, queue_class=queue, tenant=tenant, limit=limit,
                                   newest_first=True)
        return JobList(jobs=[JobView.of(j) for j in found])

    @app.post("/v1/jobs/{job_id}/cancel", dependencies=[auth], responses=ERRORS, tags=["jobs"])
    def cancel(job_id: UUID, reason: str | None = None) -> JobView:
        """Cancel a queued, submitted or running job; the coordinator that follows it stops its workflow."""
        with connection() as conn:
            try:
                job = jobs.cancel(conn, job_id, actor=claimer, reason=reason or "cancelled through the API")
            except JobNotFound as e:
                raise HTTPException(404, str(e)) from None
            except InvalidTransition as e:
                raise HTTPException(409, str(e)) from None
            return JobView.of(job)

    # -- queues -------------------------------------------------------------------------------------------------
    @app.get("/v1/queues", dependencies=[auth], responses=ERRORS, tags=["queues"])
    def queues() -> QueueList:
        """Each queue class's depth, in-flight jobs, and why its admission is held (back-pressure), if it is."""
        with connection() as conn:
            counts = jobs.counts_by_class(conn)
            active = holds.active_holds(conn)
        return QueueList(queues=[
            QueueView(name=name, concurrency=q.concurrency, weight=q.weight,
                      queued=counts.get((name, "queued"), 0), submitted=counts.get((name, "submitted"), 0),
                      running=counts.get((name, "running"), 0),
                      held=[HoldView(reason=h.reason, detail=h.detail, held_by=h.held_by, since=h.since,
                                     until=h.until) for h in active.get(name, [])])
            for name, q in sorted(config.queues.items())
        ])

    return app
