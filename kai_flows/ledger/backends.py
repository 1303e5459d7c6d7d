"""What the coordinator drives: the Backend protocol, and SubprocessBackend, a real one-machine backend.

A backend runs one workflow per (job, attempt) and labels it with the job id and attempt *as it creates it*,
so a coordinator that died between creating the workflow and recording its name finds it again with
`find_by_label` instead of submitting twice. Phases are Argo's: Pending, Running, Succeeded, Failed, Error.
The local-engine (local_backend.py) and Argo (argo_backend.py) backends implement the same protocol (for Argo:
labels in the Workflow's metadata, and a deterministic metadata.name per job and attempt so a duplicate create
fails with AlreadyExists).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple, Protocol
from uuid import UUID

from kai_flows.ledger.errors import BackendError
from kai_flows.ledger.models import Job, JobOutput

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Error")


def job_workflow_name(job_id: UUID | str, attempt: int) -> str:
    """The workflow name of a job's attempt: deterministic, so a second create of the same attempt collides."""
    return f"job-{UUID(str(job_id))}-{attempt}"


class BackendStatus(NamedTuple):
    phase: str  # one of PHASES
    outputs: list[JobOutput]
    message: str = ""


class Backend(Protocol):
    def submit(self, job: Job) -> str:
        """Create the job's workflow, labelled with job.id and job.attempts; return its name."""

    def status(self, workflow_name: str) -> BackendStatus | tuple[str, list[JobOutput]]:
        """The workflow's phase and, once it succeeded, its outputs."""

    def find_by_label(self, job_id: UUID | str, attempt: int) -> str | None:
        """The workflow created for this job and attempt, if there is one."""

    def cancel(self, workflow_name: str) -> None:
        """Stop the workflow (a no-op once it has ended)."""


# The job a SubprocessBackend workflow runs: sleep, write an output, exit with the requested code. It records
# its own pid, start, end and exit status in its workflow folder, so a restarted coordinator can follow it.
_RUNNER = r"""
import json, os, sys, time
d = sys.argv[1]
p = json.loads(sys.argv[2])
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(d, name + ".tmp"), os.path.join(d, name))
put("pid", str(os.getpid()))
if os.path.exists(os.path.join(d, "cancelled")):  # cancelled before we wrote our pid: nobody could signal us
    sys.exit(143)
put("started", repr(time.time()))
time.sleep(float(p.get("sleep", 0)))
code = int(p.get("exit_code", 0))
if code == 0 and "output" in p:
    os.makedirs(os.path.join(d, "out"), exist_ok=True)
    with open(os.path.join(d, "out", "result.txt"), "w") as f:
        f.write(str(p["output"]))
put("finished", repr(time.time()))
put("rc", str(code))
sys.exit(code)
"""

START_GRACE_S = 10.0


class SubprocessBackend:
    """Runs each job as a short real subprocess; all its state lives in `state_dir`, none in this object.

    Job parameters: `sleep` (seconds), `exit_code` (0 succeeds), `output` (text written to out/result.txt).
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen] = {}

    workflow_name = staticmethod(job_workflow_name)

    def _dir(self, name: str) -> Path:
        d = self.state_dir / name
        if not (d / "label.json").is_file():
            raise BackendError(f"no workflow {name} in {self.state_dir}")
        return d

    def submit(self, job: Job) -> str:
        name = self.workflow_name(job.id, job.attempts)
        tmp = self.state_dir / f".tmp-{name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        label = {"job_id": str(job.id), "attempt": job.attempts, "parameters": job.parameters}
        (tmp / "label.json").write_text(json.dumps(label))
        try:
            tmp.rename(self.state_dir / name)  # atomic: the workflow appears already labelled, or not at all
        except OSError:
            shutil.rmtree(tmp)
            return name  # already created (by us before a crash, or by another coordinator): never twice
        self._launch(name)
        return name

    def _launch(self, name: str) -> None:
        d = self.state_dir / name
        try:
            fd = os.open(d / "launched", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        params = json.loads((d / "label.json").read_text())["parameters"]
        # A session of its own: the job outlives a coordinator killed mid-way, as an Argo workflow would.
        self._children[name] = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, str(d), json.dumps(params)],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _alive(self, name: str, pid: int) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def status(self, workflow_name: str) -> BackendStatus:
        d = self._dir(workflow_name)
        if (d / "rc").is_file():
            self._children.pop(workflow_name, None)
            code = int((d / "rc").read_text())
            if code != 0:
                return BackendStatus("Failed", [], f"exit code {code}")
            return BackendStatus("Succeeded", self._outputs(d))
        if (d / "pid").is_file():
            if self._alive(workflow_name, int((d / "pid").read_text())):
                return BackendStatus("Running", [])
            if (d / "rc").is_file():  # it finished between the two checks
                return self.status(workflow_name)
            why = "cancelled" if (d / "cancelled").is_file() else "process ended without an exit status"
            return BackendStatus("Failed", [], why)
        if (d / "cancelled").is_file():
            return BackendStatus("Failed", [], "cancelled")
        if not (d / "launched").is_file():
            self._launch(workflow_name)  # created, then its creator died before starting it
        elif time.time() - (d / "launched").stat().st_mtime > START_GRACE_S:
            return BackendStatus("Error", [], f"process did not start within {START_GRACE_S:.0f}s")
        return BackendStatus("Pending", [])

    def _outputs(self, d: Path) -> list[JobOutput]:
        out = d / "out"
        files = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
        return [
            JobOutput(p.resolve().as_uri(), hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in files
        ]

    def find_by_label(self, job_id: UUID | str, attempt: int) -> str | None:
        name = self.workflow_name(job_id, attempt)
        if (self.state_dir / name / "label.json").is_file():
            label = json.loads((self.state_dir / name / "label.json").read_text())
            if label["job_id"] == str(UUID(str(job_id))) and label["attempt"] == attempt:
                return name
        return None

    def cancel(self, workflow_name: str) -> None:
        d = self._dir(workflow_name)
        # Marker first, pid second; the runner writes its pid, then checks the marker: one of us sees the other.
        (d / "cancelled").touch()
        child = self._children.pop(workflow_name, None)
        pid = child.pid if child is not None else int((d / "pid").read_text()) if (d / "pid").is_file() else None
        if pid is not None and not (d / "rc").is_file():
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
        if child is not None:
            child.wait(timeout=10)

    def workflows(self) -> list[str]:
        """Every workflow this backend created (for tests and operators)."""
        return sorted(p.parent.name for p in self.state_dir.glob("*/label.json") if not p.parent.name.startswith("."))


def make_backend(name: str, **options: str) -> Backend:
    """The backend the CLI names: `local` (the engine; state in --state-dir, $KAI_LOCAL_BACKEND_DIR or the engine
    cache), `argo` (kai_flows.submit; cluster and S3 from the environment) or `subprocess` (tests)."""
    if name == "subprocess":
        state = options.get("state_dir") or os.environ.get("KAI_SUBPROCESS_BACKEND_DIR")
        if not state:
            raise BackendError("the subprocess backend needs a state directory (--state-dir)")
        return SubprocessBackend(state)
    if name == "local":
        from kai_flows.engine.runner import cache_dir
        from kai_flows.ledger.local_backend import LocalEngineBackend

        state = options.get("state_dir") or os.environ.get("KAI_LOCAL_BACKEND_DIR") or str(cache_dir() / "coordinator")
        return LocalEngineBackend(state)
    if name == "argo":
        from kai_flows.ledger.argo_backend import ArgoBackend

        return ArgoBackend.from_env()
    raise BackendError(f"unknown backend {name!r}; known: local, argo, subprocess")
