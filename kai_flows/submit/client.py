"""Submit, follow, find, cancel and fetch the outputs of kai-flows workflows on a cluster.

    sub = Submitter()                                   # backend from KAI_ARGO_SERVER / kubeconfig
    name = sub.submit(SubmitRequest(pipeline="image-quality", parameters={"images": "in/job-1/"}, tier="pro"))
    status = sub.wait(name, timeout=3600, progress=True)
    status.phase, status.node_phases, status.artifacts
    sub.download(status, Path("out"))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kai_flows.policy import NAMESPACE, Policy, load_policy
from kai_flows.store import S3Config
from kai_flows.submit.backends import Backend, backend_from_env
from kai_flows.submit.download import download_artifacts
from kai_flows.submit.errors import SubmitError, WaitTimeout
from kai_flows.submit.request import JOB_ID_LABEL, SubmitRequest, build_workflow, check_scheduling
from kai_flows.submit.status import WorkflowStatus, parse_status
from kai_flows.submit.template import TemplateInfo, known_local_templates, load_local_template, parse_template

_POD_NODES = ("Pod",)  # what the progress bar counts (Retry nodes are parents of their Pod attempts)


class Submitter:
    def __init__(self, backend: Backend | None = None, *, templates_dir: Path | None = None,
                 policy: Policy | None = None, context: str | None = None) -> None:
        self._backend = backend
        self._context = context
        self.templates_dir = templates_dir
        self.policy = policy or load_policy()

    @property
    def backend(self) -> Backend:
        if self._backend is None:  # created on first use, so building a Workflow needs no cluster
            self._backend = backend_from_env(self._context)
        return self._backend

    # ------------------------------------------------------------------ building

    def template(self, pipeline: str, namespace: str = NAMESPACE) -> TemplateInfo:
        """The committed template if there is one, else the cluster's; SubmitError when neither exists."""
        if (info := load_local_template(pipeline, self.templates_dir)) is not None:
            return info
        if self._backend is None and not _cluster_available():
            known = ", ".join(known_local_templates(self.templates_dir)) or "none"
            raise SubmitError(f"unknown pipeline {pipeline!r}: no committed template (known: {known}) "
                              "and no cluster configured to ask")
        doc = self.backend.get_template(pipeline.replace("_", "-"), namespace)
        if doc is None:
            raise SubmitError(f"unknown pipeline {pipeline!r}: no WorkflowTemplate of that name in {namespace!r} "
                              f"({self.backend.description})")
        return parse_template(doc, f"{self.backend.description} workflowtemplate/{pipeline}")

    def build(self, req: SubmitRequest) -> dict[str, Any]:
        """The Workflow `submit` would create, fully checked; nothing is created."""
        check_scheduling(req, self.policy)  # queue, tier, labels: before reading any template
        return build_workflow(req, self.template(req.pipeline, req.namespace), self.policy)

    # ------------------------------------------------------------------ operations

    def submit(self, req: SubmitRequest, *, idempotent: bool = True) -> str:
        """Create the Workflow; returns its name. With `idempotent`, a workflow already carrying the request's
        job id is returned instead of creating a second one (a coordinator that restarts mid-submit)."""
        workflow = self.build(req)
        if idempotent and (existing := self.find(req.job_id, req.namespace)):
            return existing[0].name
        created = self.backend.create(workflow)
        name = (created.get("metadata") or {}).get("name")
        if not name:
            raise SubmitError(f"{self.backend.description} created a workflow for job {req.job_id} but named none")
        return name

    def status(self, name: str, namespace: str = NAMESPACE) -> WorkflowStatus:
        return parse_status(self.backend.get(name, namespace))

    def find(self, job_id: str, namespace: str = NAMESPACE) -> list[WorkflowStatus]:
        """Workflows labelled with this job id, oldest first."""
        items = self.backend.list(namespace, f"{JOB_ID_LABEL}={job_id}")
        items.sort(key=lambda w: ((w.get("metadata") or {}).get("creationTimestamp") or "",
                                  (w.get("metadata") or {}).get("name") or ""))
        return [parse_status(w) for w in items]

    def cancel(self, name: str, namespace: str = NAMESPACE, *, terminate: bool = True) -> None:
        """Terminate (no exit handler) or, with terminate=False, stop (running steps end, the exit handler runs)."""
        (self.backend.terminate if terminate else self.backend.stop)(name, namespace)

    def wait(self, name: str, namespace: str = NAMESPACE, *, timeout: float = 3600.0, poll: float = 2.0,
             progress: bool = False, on_update: Callable[[WorkflowStatus], None] | None = None) -> WorkflowStatus:
        """Poll until the workflow is Succeeded, Failed or Error; WaitTimeout after `timeout` seconds.

        Polling (not the watch stream) works the same on both backends and survives a dropped connection.
        `progress` draws a rich progress bar (finished pods / pods so far, phase, running steps) on stderr."""
        deadline = time.monotonic() + timeout
        if progress:
            return self._wait_with_progress(name, namespace, deadline, poll, on_update)
        while True:
            status = self.status(name, namespace)
            if on_update:
                on_update(status)
            if status.done:
                return status
            _sleep_or_timeout(deadline, poll, status)

    def _wait_with_progress(self, name: str, namespace: str, deadline: float, poll: float,
                            on_update: Callable[[WorkflowStatus], None] | None) -> WorkflowStatus:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        # on stderr: stdout stays for results a script may read
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(name, total=None)
            while True:
                status = self.status(name, namespace)
                if on_update:
                    on_update(status)
                pods = [n for n in status.nodes if n.type in _POD_NODES]
                finished = sum(n.phase in ("Succeeded", "Failed", "Error", "Skipped", "Omitted") for n in pods)
                running = [n.display_name for n in pods if n.phase == "Running"]
                bar.update(task, total=max(len(pods), 1), completed=finished,
                           description=f"{name} {status.phase or 'Pending'}"
                                       + (f" [{', '.join(running[:3])}]" if running else ""))
                if status.done:
                    return status
                _sleep_or_timeout(deadline, poll, status)

    def download(self, status: WorkflowStatus, dest: Path, *, outputs: dict[str, str] | None = None,
                 config: S3Config | None = None) -> list[Path]:
        """Download the artifacts of `status` (only the pipeline `outputs` {name: task.artifact} when given)."""
        artifacts = list(status.outputs(outputs).values()) if outputs is not None else status.artifacts
        if not artifacts:
            raise SubmitError(f"workflow {status.name} has no output artifacts to download (phase {status.phase})")
        return download_artifacts(artifacts, dest, config)


def _sleep_or_timeout(deadline: float, poll: float, status: WorkflowStatus) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(f"workflow {status.name} still {status.phase or 'Pending'} after the timeout; "
                          "it keeps running (cancel it with Submitter.cancel)")
    time.sleep(min(poll, left))


def _cluster_available() -> bool:
    from kai_flows.submit.backends import cluster_configured

    return cluster_configured()
