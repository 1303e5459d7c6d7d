"""The coordinator's HTTP API and its Python client, through a real server over the real PostgreSQL."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from kai_flows.ledger import holds, jobs
from kai_flows.ledger.migrate import migrate
from kai_flows.ledger.models import JobStatus
from kai_flows.service import ApiError, CoordinatorClient
from tests.service.conftest import TOKEN, ApiServer

PHOTOS = {"images": "uploads/acme/shoot-1/"}


def test_no_token_no_access_and_probes_stay_open(api: ApiServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/queues")):
            r = httpx.request(method, api.url + path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(api.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(api.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_submit_is_idempotent_by_key(client: CoordinatorClient, conn: psycopg.Connection) -> None:
    first = client.submit("image-quality", PHOTOS, tier="pro", tenant="acme", idempotency_key="shoot-1")
    again = client.submit("image-quality", PHOTOS, tier="pro", tenant="acme", idempotency_key="shoot-1")
    assert again.id == first.id and first.status == JobStatus.QUEUED
    assert len(jobs.list_jobs(conn)) == 1
    # The same key for a different request is refused, not answered with the other job.
    with pytest.raises(ApiError) as e:
        client.submit("image-quality", {**PHOTOS, "min_images": 5}, tier="pro", tenant="acme",
                      idempotency_key="shoot-1")
    assert e.value.status == 409 and "already used for job" in e.value.detail
    # Keys are per tenant: another tenant's same key is its own job.
    other = client.submit("image-quality", {"images": "uploads/beta/x/"}, tenant="beta", idempotency_key="shoot-1")
    assert other.id != first.id


def test_status_codes_of_a_retried_submission(api: ApiServer) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k-1"}
    body = {"pipeline": "image-quality", "parameters": PHOTOS, "tenant": "acme"}
    assert httpx.post(api.url + "/v1/jobs", json=body, headers=headers).status_code == 201
    assert httpx.post(api.url + "/v1/jobs", json=body, headers=headers).status_code == 200


@pytest.mark.parametrize(("change", "message"), [
    ({"pipeline": "nope"}, "pipeline: unknown pipeline 'nope'; known: image-quality"),
    ({"parameters": {**PHOTOS, "min_imagez": 3}}, "parameters.min_imagez: pipeline 'image-quality' has no such"),
    ({"parameters": {**PHOTOS, "min_images": "three"}}, "parameters.min_images: 'three' is not valid"),
    ({"parameters": {}}, "pipeline 'image-quality' needs images"),
    ({"tier": "gold"}, "unknown tier 'gold'"),
    ({"queue": "urgent"}, "unknown queue class 'urgent'"),
    ({"tenant": "Acme!"}, "tenant: "),
    ({"parameters": {"images": "uploads/other/photos/"}}, "outside what tenant 'acme' may read"),
    ({"pipeline": "reconstruction", "tier": "free", "parameters": {**PHOTOS, "quality_tier": "high"}},
     "parameters.quality_tier: tier 'free' may ask for draft, standard, not 'high'"),
    ({"pipeline": "reconstruction", "parameters": {**PHOTOS, "quality_tier": "ultra"}},
     "parameters.quality_tier: 'ultra' is not valid"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_bad_requests_are_refused_by_name_and_queue_nothing(
        client: CoordinatorClient, conn: psycopg.Connection, change: dict, message: str) -> None:
    body = {"pipeline": "image-quality", "parameters": PHOTOS, "tenant": "acme", **change}
    r = client._http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"], r.json()
    assert jobs.list_jobs(conn) == []


def test_get_list_and_cancel_through_the_api(client: CoordinatorClient, conn: psycopg.Connection) -> None:
    a = client.submit("image-quality", PHOTOS, tenant="acme", queue="interactive")
    b = client.submit("image-quality", PHOTOS, tenant="acme", tier="free")
    got = client.get(a.id)
    assert got.queue_class == "interactive" and [h.to_status for h in got.history] == [JobStatus.QUEUED]
    assert got.outputs == []
    assert [j.id for j in client.list(queue="batch")] == [b.id]
    assert {j.id for j in client.list(status="queued", tenant="acme")} == {a.id, b.id}
    cancelled = client.cancel(a.id, reason="changed my mind")
    assert (cancelled.status, cancelled.error) == (JobStatus.CANCELLED, "changed my mind")
    assert [h.to_status for h in client.get(a.id).history] == [JobStatus.QUEUED, JobStatus.CANCELLED]
    assert client.cancel(a.id).status == JobStatus.CANCELLED  # a repeated cancel changes nothing
    assert len(client.get(a.id).history) == 2
    jobs.transition(conn, b.id, JobStatus.SUBMITTED)
    jobs.transition(conn, b.id, JobStatus.SUCCEEDED)
    with pytest.raises(ApiError) as e:
        client.cancel(b.id)
    assert e.value.status == 409 and "cannot go from succeeded to cancelled" in e.value.detail
    with pytest.raises(ApiError) as e:
        client.get("00000000-0000-0000-0000-000000000000")
    assert e.value.status == 404
    assert client._http.get("/v1/jobs/not-a-uuid").status_code == 422


def test_queue_depths_and_held_classes(client: CoordinatorClient, conn: psycopg.Connection) -> None:
    for _ in range(3):
        client.submit("image-quality", PHOTOS, tenant="acme", queue="batch")
    holds.hold(conn, "batch", "unschedulable", "workflow w: Unschedulable: 0/3 nodes are available", held_by="c1",
               seconds=60)
    queues = {q.name: q for q in client.queues()}
    assert (queues["batch"].queued, queues["interactive"].queued) == (3, 0)
    assert queues["batch"].concurrency == 10 and queues["batch"].weight == 5
    [held] = queues["batch"].held
    assert (held.reason, held.held_by) == ("unschedulable", "c1") and "0/3 nodes" in held.detail
    assert queues["interactive"].held == []


def test_readyz_reports_pending_migrations(database_url: str, config) -> None:  # type: ignore[no-untyped-def]
    with ApiServer(database_url, config) as server:  # a database nobody migrated
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and "migrations not current: 001_job_ledger.sql (pending)" in r.json()["detail"]
        migrate(database_url)
        assert httpx.get(server.url + "/readyz").status_code == 200


def test_database_down_is_a_503_not_a_traceback(ledger_url: str, config) -> None:  # type: ignore[no-untyped-def]
    with ApiServer("postgresql://postgres@127.0.0.1:5999/none", config) as server:
        r = httpx.get(server.url + "/v1/queues", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 503 and "the ledger database is unavailable" in r.json()["detail"]
        assert httpx.get(server.url + "/readyz", timeout=30).status_code == 503
