"""The Python client of the coordinator API.

    from kai_flows.service import CoordinatorClient
    client = CoordinatorClient("http://127.0.0.1:8080", token)
    job = client.submit("image-quality", {"images": "uploads/acme/shoot-1"}, tier="pro", tenant="acme",
                        idempotency_key="shoot-1")
    done = client.wait(job.id)

Retries: a submission with an idempotency key is retried on connection errors and 5xx (it cannot create a
second job); other calls are retried when they only read. Errors are ApiError with the server's one-line detail.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from uuid import UUID

import httpx

from kai_flows.ledger.models import TERMINAL, JobStatus
from kai_flows.service.schemas import JobList, JobRequest, JobView, QueueList, QueueView


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class CoordinatorClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, retries: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})
        self.retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1 if retry else 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if attempt >= (self.retries if retry else 0):
                    raise ApiError(0, f"cannot reach the coordinator at {self._http.base_url}: {e}") from None
            else:
                if response.status_code < 500 or not retry or attempt >= self.retries:
                    break
            time.sleep(min(0.2 * 2**attempt, 2.0))
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        return response

    def submit(self, pipeline: str, parameters: dict[str, Any] | None = None, *, tier: str = "pro",
               queue: str | None = None, tenant: str = "default", input_uri: str | None = None,
               output_uri: str | None = None, priority: int | None = None,
               idempotency_key: str | None = None) -> JobView:
        """Queue a job. Without an idempotency key one is made up, so the client's own retries stay safe."""
        body = JobRequest(pipeline=pipeline, parameters=parameters or {}, tier=tier, queue=queue, tenant=tenant,
                          input_uri=input_uri, output_uri=output_uri, priority=priority)
        key = idempotency_key or uuid.uuid4().hex
        r = self._call("POST", "/v1/jobs", retry=True, json=body.model_dump(mode="json", exclude_none=True),
                       headers={"Idempotency-Key": key})
        return JobView.model_validate(r.json())

    def get(self, job_id: UUID | str) -> JobView:
        return JobView.model_validate(self._call("GET", f"/v1/jobs/{job_id}", retry=True).json())

    def list(self, *, status: JobStatus | str | None = None, queue: str | None = None, tenant: str | None = None,
             limit: int = 100) -> list[JobView]:
        params = {k: str(v) for k, v in {"status": status, "queue": queue, "tenant": tenant, "limit": limit}.items()
                  if v is not None}
        return JobList.model_validate(self._call("GET", "/v1/jobs", retry=True, params=params).json()).jobs

    def cancel(self, job_id: UUID | str, reason: str | None = None) -> JobView:
        params = {"reason": reason} if reason else {}
        return JobView.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel", retry=False,
                                                 params=params).json())

    def queues(self) -> list[QueueView]:
        return QueueList.model_validate(self._call("GET", "/v1/queues", retry=True).json()).queues

    def wait(self, job_id: UUID | str, *, timeout: float = 3600.0, poll: float = 1.0) -> JobView:
        """The job once it reached a final status; TimeoutError naming its last status otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(poll)
