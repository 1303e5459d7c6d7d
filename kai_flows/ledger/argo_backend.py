"""The `argo` coordinator backend, a WorkflowRunner: a thin adapter from ledger jobs to kai_flows.submit.Submitter
(which raises its own WorkflowNotFound; this runner translates it into the ledger's).

A job becomes a SubmitRequest (pipeline, parameters, the job's queue class and tier, job-id label) built and
checked by the Submitter; the backend adds an attempt label and a deterministic metadata.name per job and
attempt (`job-<uuid>-<attempt>`), so a second create of the same attempt is refused by the server instead of
running twice, and a coordinator that died before recording the name finds the workflow by its labels.
Outputs: the pipeline outputs (the template's kai-flows.io/outputs annotation) are read from S3 once the workflow
succeeded, to record each object's sha256 and size as the ledger requires; so the backend needs the KAI_S3_*
settings of the cluster's artifact repository.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from kai_flows.ledger.errors import BackendError, WorkflowNotFound
from kai_flows.ledger.models import Job, JobOutput
from kai_flows.ledger.runner import Phase, RunStatus, job_workflow_name
from kai_flows.policy import NAMESPACE
from kai_flows.store import S3Config, StoreError
from kai_flows.submit import JOB_ID_LABEL, SubmitError, SubmitRequest, Submitter, WorkflowStatus
from kai_flows.submit import errors as submit_errors

ATTEMPT_LABEL = "kai-flows.io/attempt"
# Every Kubernetes API call this backend makes, as RBAC rules: (API group, resource) -> verbs. `submit` creates a
# workflow and `find_by_label` lists them; `status` gets one; `cancel` patches its spec.shutdown (what `argo
# terminate` does); a job's input key and its outputs read the WorkflowTemplate. Through the Argo Server the same
# calls are made with the coordinator's token. The coordinator's Role is rendered from this table and lint
# compares the two; tests/lint/test_cluster_hardening.py records the backend's real requests against it.
API_PERMISSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("argoproj.io", "workflows"): ("create", "get", "list", "patch"),
    ("argoproj.io", "workflowtemplates"): ("get",),
}
_PHASES: dict[str, Phase] = {"": "Pending", "Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded",
                             "Failed": "Failed", "Error": "Error"}


class ArgoBackend:
    def __init__(self, submitter: Submitter, s3: S3Config, *, namespace: str = NAMESPACE) -> None:
        self.submitter = submitter
        self.s3 = s3
        self.namespace = namespace

    @classmethod
    def from_env(cls) -> ArgoBackend:
        """The cluster from KAI_ARGO_SERVER/KAI_ARGO_TOKEN or the kubeconfig, S3 from KAI_S3_*; checked now."""
        try:
            s3 = S3Config.from_env()
        except StoreError as e:
            raise BackendError(f"the argo backend: {e}") from None
        if s3 is None:
            raise BackendError("the argo backend records its outputs' sha256 and size from S3: set KAI_S3_ENDPOINT, "
                               "KAI_S3_ACCESS_KEY, KAI_S3_SECRET_KEY and KAI_S3_BUCKET")
        submitter = Submitter()
        try:
            submitter.backend  # noqa: B018 - fail at start-up, not on the first job, when no cluster is configured
        except SubmitError as e:
            raise BackendError(str(e)) from None
        return cls(submitter, s3)

    workflow_name = staticmethod(job_workflow_name)

    # -- submit ---------------------------------------------------------------------------------------------
    def request(self, job: Job) -> SubmitRequest:
        params = dict(job.parameters)
        if job.input_uri:
            params.update(self._input_parameters(job, params))
        return SubmitRequest(pipeline=job.pipeline, parameters=params, queue=job.queue_class, tier=job.tier,
                             job_id=str(job.id), labels={ATTEMPT_LABEL: str(job.attempts)}, namespace=self.namespace,
                             tenant=job.tenant)  # the submitter confines the job's input keys to its tenant

    def _input_parameters(self, job: Job, given: dict[str, Any]) -> dict[str, str]:
        """input_uri: a JSON object {parameter: S3 key}, or one key (s3://bucket/key or key) for the template's
        only required parameter the job does not give."""
        uri = job.input_uri or ""
        if uri.lstrip().startswith("{"):
            try:
                mapping = json.loads(uri)
            except ValueError as e:
                raise BackendError(f"input URI {uri!r} is not a JSON object: {e}") from None
            return {k: _s3_key(v) for k, v in mapping.items()}
        try:
            info = self.submitter.template(job.pipeline, self.namespace)
        except SubmitError as e:
            if e.transient:
                raise  # unreachable or 5xx: the coordinator keeps the job and tries again
            raise BackendError(str(e)) from None
        open_params = [p.name for p in info.parameters if p.required and p.name not in given]
        if len(open_params) != 1:
            raise BackendError(f"input URI {uri!r}: pipeline {job.pipeline!r} has {len(open_params)} required "
                               f"parameters left ({', '.join(open_params) or 'none'}); name it as a JSON object")
        return {open_params[0]: _s3_key(uri)}

    def submit(self, job: Job) -> str:
        if (found := self.find_by_label(job.id, job.attempts)) is not None:
            return found
        try:
            workflow = self.submitter.build(self.request(job))
        except (SubmitError, ValueError) as e:  # unknown queue, tier, pipeline or parameter: the job is refused
            raise BackendError(str(e).splitlines()[0]) from None
        name = self.workflow_name(job.id, job.attempts)
        workflow["metadata"].pop("generateName", None)
        workflow["metadata"]["name"] = name
        try:
            self.submitter.backend.create(workflow)
        except SubmitError as e:
            if self.find_by_label(job.id, job.attempts) is not None:
                return name  # created meanwhile (another coordinator, or a reply lost on the way back)
            if e.transient:
                raise  # unreachable, 5xx or 429: the coordinator keeps the job and tries again
            raise BackendError(str(e)) from None
        return name

    # -- follow -----------------------------------------------------------------------------------------------
    def status(self, workflow_name: str) -> RunStatus:
        try:
            st = self.submitter.status(workflow_name, self.namespace)
        except submit_errors.WorkflowNotFound as e:
            raise WorkflowNotFound(str(e)) from None  # deleted: its outcome is lost
        phase = _PHASES.get(st.phase, "Error")
        outputs = self._outputs(st) if phase == "Succeeded" else ()
        waiting, since = _unschedulable(st) if phase in ("Pending", "Running") else ("", None)
        return RunStatus(phase, outputs, st.message or "", unschedulable=waiting, unschedulable_since=since)

    def _outputs(self, st: WorkflowStatus) -> tuple[JobOutput, ...]:
        """Each object of the pipeline's outputs (an object, or every object under a folder prefix), hashed."""
        from minio import Minio

        pipeline = st.labels.get("workflows.argoproj.io/workflow-template", "")
        declared = self.submitter.template(pipeline, self.namespace).outputs if pipeline else {}
        locations = list(st.outputs(declared).values()) if declared else st.artifacts
        client = Minio(self.s3.endpoint, access_key=self.s3.access_key, secret_key=self.s3.secret_key,
                       secure=self.s3.secure, region=self.s3.region)
        found = []
        for loc in locations:
            bucket = loc.bucket or self.s3.bucket
            folder = loc.key.rstrip("/") + "/"
            names = [o.object_name for o in client.list_objects(bucket, prefix=loc.key, recursive=True)
                     if not o.is_dir and (o.object_name == loc.key or o.object_name.startswith(folder))]
            if not names:
                raise BackendError(f"workflow {st.name}: output {loc.ref} at s3://{bucket}/{loc.key} does not exist")
            for name in sorted(names):
                digest, size = hashlib.sha256(), 0
                resp = client.get_object(bucket, name)
                try:
                    for chunk in resp.stream(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                finally:
                    resp.close()
                    resp.release_conn()
                found.append(JobOutput(f"s3://{bucket}/{name}", digest.hexdigest(), size))
        return tuple(found)

    def find_by_label(self, job_id: UUID | str, attempt: int) -> str | None:
        for wf in self.submitter.find(str(UUID(str(job_id))), self.namespace):
            if wf.labels.get(ATTEMPT_LABEL) == str(attempt) and wf.labels.get(JOB_ID_LABEL) == str(UUID(str(job_id))):
                return wf.name
        return None

    def cancel(self, workflow_name: str) -> None:
        try:
            self.submitter.cancel(workflow_name, self.namespace)  # terminate: `argo terminate`
        except submit_errors.WorkflowNotFound as e:
            raise WorkflowNotFound(str(e)) from None


def _unschedulable(st: WorkflowStatus) -> tuple[str, datetime | None]:
    """The first pod node the scheduler cannot place, as Argo reports it: a Pending node whose message is the
    pod's PodScheduled condition, "Unschedulable: 0/3 nodes are available: ..." (operator.go, getPendingReason)."""
    for n in st.nodes:
        if n.type == "Pod" and n.phase == "Pending" and (n.message or "").startswith("Unschedulable"):
            since = datetime.fromisoformat(n.started_at.replace("Z", "+00:00")) if n.started_at else None
            return f"{n.display_name}: {n.message}", since
    return "", None


def _s3_key(uri: str) -> str:
    """`s3://bucket/key` -> key (the workflow's artifact repository names the bucket), a bare key as is."""
    if uri.startswith("s3://"):
        return uri.removeprefix("s3://").partition("/")[2]
    return uri
