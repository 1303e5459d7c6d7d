"""The tests' WorkflowRunner: each job is a short real subprocess, all state on disk (was SubprocessBackend in
kai_flows/ledger/backends.py; a test double, so it lives with the tests, not in the library).

It labels and names workflows as the real runners do, so the coordinator's crash-safety tests hold for them too.
The CLI reaches it as `--backend fake_runner:SubprocessRunner` (tests/ledger on the import path).
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
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from kai_flows.ledger.errors import BackendError, WorkflowNotFound
from kai_flows.ledger.models import Job, JobOutput
from kai_flows.ledger.runner import RunStatus, job_workflow_name

# The job a SubprocessRunner workflow runs: sleep, write an output, exit with the requested code. It records
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


class SubprocessRunner:
    """Runs each job as a short real subprocess; all its state lives in `state_dir`, none in this object.

    Job parameters: `sleep` (seconds), `exit_code` (0 succeeds), `output` (text written to out/result.txt),
    A job without `sleep` (a real pipeline's, submitted through the API) sleeps $FAKE_RUNNER_SLEEP seconds.
    `unschedulable` (a scheduler's message: the job stays Pending with it until its folder holds `scheduled`, as a
    pod waits for a node; `schedule(name)` places it).
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        if not state_dir:  # the CLI passes --state-dir, which may be missing
            raise BackendError("the subprocess runner needs a state directory (--state-dir)")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen] = {}

    workflow_name = staticmethod(job_workflow_name)

    def _dir(self, name: str) -> Path:
        d = self.state_dir / name
        if not (d / "label.json").is_file():
            raise WorkflowNotFound(f"no workflow {name} in {self.state_dir}")
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
        if "sleep" not in params:  # a real pipeline's job (submitted through the API): as long as the test says
            params = {**params, "sleep": float(os.environ.get("FAKE_RUNNER_SLEEP", "0"))}
        if params.get("unschedulable") and not (d / "scheduled").is_file():
            os.unlink(d / "launched")  # no node for it yet: launched once scheduled
            return
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

    def status(self, workflow_name: str) -> RunStatus:
        d = self._dir(workflow_name)
        if (d / "rc").is_file():
            self._children.pop(workflow_name, None)
            code = int((d / "rc").read_text())
            if code != 0:
                return RunStatus("Failed", (), f"exit code {code}")
            return RunStatus("Succeeded", self._outputs(d))
        if (d / "pid").is_file():
            if self._alive(workflow_name, int((d / "pid").read_text())):
                return RunStatus("Running")
            if (d / "rc").is_file():  # it finished between the two checks
                return self.status(workflow_name)
            why = "cancelled" if (d / "cancelled").is_file() else "process ended without an exit status"
            return RunStatus("Failed", (), why)
        if (d / "cancelled").is_file():
            return RunStatus("Failed", (), "cancelled")
        if not (d / "launched").is_file():
            self._launch(workflow_name)  # created, then its creator died before starting it (or not scheduled yet)
            why = json.loads((d / "label.json").read_text())["parameters"].get("unschedulable")
            if why and not (d / "launched").is_file():
                since = datetime.fromtimestamp((d / "label.json").stat().st_mtime, UTC)
                return RunStatus("Pending", unschedulable=f"Unschedulable: {why}", unschedulable_since=since)
        elif time.time() - (d / "launched").stat().st_mtime > START_GRACE_S:
            return RunStatus("Error", (), f"process did not start within {START_GRACE_S:.0f}s")
        return RunStatus("Pending")

    def _outputs(self, d: Path) -> tuple[JobOutput, ...]:
        out = d / "out"
        files = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
        return tuple(
            JobOutput(p.resolve().as_uri(), hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in files
        )

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

    def schedule(self, workflow_name: str) -> None:
        """A node freed up: the unschedulable job starts on the next status read."""
        (self._dir(workflow_name) / "scheduled").touch()

    def workflows(self) -> list[str]:
        """Every workflow this backend created (for tests and operators)."""
        return sorted(p.parent.name for p in self.state_dir.glob("*/label.json") if not p.parent.name.startswith("."))
