"""The `local` coordinator backend, a WorkflowRunner: each job runs the local engine (`run_pipeline`) in a child
process of its own.

State lives on disk, none in the object, so a restarted coordinator finds every job it had started:

    <state>/workflows/<job-<uuid>-<attempt>>/
        label.json    job id, attempt, template file, parameters, inputs, queue class (created atomically)
        launch.json   the store config and generation the current child runs with (0600; it holds the S3 keys)
        launches      how many children were started (a resume after a lost store or a killed child counts)
        pid           the engine child's pid;  cancelled: the cancel marker;  engine.log: its output
        out/          the engine's --out (run.json, logs/, the pipeline outputs)
        result.json   what the child reports when run_pipeline returns: phase, message, outputs, store generation
                      (result-<n>.json: what the n-th child reported, when it was resumed after it)
    <state>/cache/    the engine cache shared by every job: run registry (for resume) and queue semaphores
    <state>/store/    the embedded SeaweedFS shared by every job of this coordinator; store.json: its ports, generation
    <state>/tenants/<tenant>/   the only folders a tenant's jobs may name as input or output (kai_flows/tenancy.py;
                      `tenants_dir=` or $KAI_TENANTS_DIR puts them elsewhere)

Children run in sessions of their own, so they outlive a coordinator killed mid-way (as Argo workflows would).
The embedded store does not (it dies with the process that started it): the next coordinator starts it again on
the same data directory (objects survive, same ports when free) with a new generation. A child whose run did not
succeed under an older generation, or that died without a result, is resumed with the engine's `resume=`
(succeeded steps are reused), at most MAX_LAUNCHES times in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from kai_flows import resources
from kai_flows.argo.names import INPUTS_ANNOTATION, QUEUE_CONFIGMAP
from kai_flows.ledger.errors import BackendError, WorkflowNotFound
from kai_flows.ledger.models import Job, JobOutput
from kai_flows.ledger.runner import RunStatus, job_workflow_name
from kai_flows.tenancy import TenancyError, check_input_key, check_tenant_folder

MAX_LAUNCHES = 3
START_GRACE_S = 30.0


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_inputs(input_uri: str | None, input_names: list[str]) -> dict[str, str]:
    """A job's input URI(s) as {pipeline input: local folder}: one folder (a pipeline with one input), or a JSON
    object naming each input. `file://` URIs are accepted."""
    if not input_uri:
        return {}
    if input_uri.lstrip().startswith("{"):
        try:
            raw = json.loads(input_uri)
        except ValueError as e:
            raise BackendError(f"input URI {input_uri!r} is not a JSON object: {e}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise BackendError(f"input URI {input_uri!r} must map input names to folders")
        mapping = raw
    elif len(input_names) == 1:
        mapping = {input_names[0]: input_uri}
    else:
        raise BackendError(f"input URI {input_uri!r}: the pipeline takes inputs {', '.join(input_names) or 'none'}; "
                           'name them as a JSON object {"input": "folder"}')
    out = {}
    for name, uri in mapping.items():
        if uri.startswith("file://"):
            uri = uri.removeprefix("file://")
        elif "://" in uri:
            raise BackendError(f"input {name!r}: {uri!r} is not a local folder (the local backend reads file:// only)")
        out[name] = str(Path(uri).expanduser().resolve())
    return out


def _parameter_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


class LocalEngineBackend:
    """Runs jobs with the local engine; see the module docstring. `store`: an S3Config to use instead of the
    embedded SeaweedFS (default: $KAI_S3_* if set, else the embedded one under `<state>/store`)."""

    def __init__(self, state_dir: str | os.PathLike[str], *, store: Any = None,
                 templates_dir: str | os.PathLike[str] | None = None, warm_starts: bool = True,
                 tenants_dir: str | os.PathLike[str] | None = None) -> None:
        from kai_flows.store import S3Config

        self.state_dir = Path(state_dir).resolve()
        self.workflows_dir = self.state_dir / "workflows"
        self.cache_dir = self.state_dir / "cache"
        self.tenants_dir = Path(tenants_dir or os.environ.get("KAI_TENANTS_DIR") or self.state_dir / "tenants")
        for d in (self.workflows_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.templates_dir = Path(templates_dir or os.environ.get("KAI_TEMPLATES_DIR")
                                  or resources.templates_dir())
        self.warm_starts = warm_starts
        self._external = store if store is not None else S3Config.from_env()
        self._server: Any = None  # EmbeddedSeaweedFS, started on first launch
        self._generation = "external" if self._external is not None else ""
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- the shared store ---------------------------------------------------------------------------------
    def _store(self) -> tuple[Any, str]:
        """(S3Config, generation) for a new child; starts the embedded SeaweedFS the first time."""
        if self._external is not None:
            return self._external, self._generation
        if self._server is None or not self._server.running:
            from kai_flows.store import EmbeddedSeaweedFS
            from kai_flows.store.seaweed import port_free

            saved = _read_json(self.state_dir / "store.json") or {}
            ports = tuple(saved.get("ports") or ())
            # The same ports as last time when free: children of a killed coordinator reach the new server.
            reuse = len(ports) == 4 and all(port_free(p) and port_free(p + 10000) for p in ports)
            server = EmbeddedSeaweedFS(self.state_dir / "store", ports=ports if reuse else None)  # type: ignore[arg-type]
            server.start()
            server.store(warm_up=True)  # bucket and volumes now, not in the first job's upload
            self._server, self._generation = server, uuid.uuid4().hex
            _write_atomic(self.state_dir / "store.json", json.dumps(
                {"ports": [server.ports[r] for r in ("master", "volume", "filer", "s3")],
                 "generation": self._generation}))
        return self._server.config(), self._generation

    def close(self) -> None:
        """Stop the embedded store (running children lose it; the next backend resumes them)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- naming and lookup ----------------------------------------------------------------------------------
    workflow_name = staticmethod(job_workflow_name)

    def _dir(self, name: str) -> Path:
        d = self.workflows_dir / name
        if not (d / "label.json").is_file():
            raise WorkflowNotFound(f"no workflow {name} in {self.workflows_dir}")
        return d

    def find_by_label(self, job_id: UUID | str, attempt: int) -> str | None:
        name = self.workflow_name(job_id, attempt)
        label = _read_json(self.workflows_dir / name / "label.json")
        if label and label["job_id"] == str(UUID(str(job_id))) and label["attempt"] == attempt:
            return name
        return None

    def workflows(self) -> list[str]:
        return sorted(p.parent.name for p in self.workflows_dir.glob("*/label.json"))

    # -- submit -----------------------------------------------------------------------------------------------
    def _template(self, pipeline: str) -> Path:
        path = self.templates_dir / f"{pipeline.strip().replace('_', '-')}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in self.templates_dir.glob("*.yaml"))
            raise BackendError(f"unknown pipeline {pipeline!r}: no {path} (known: {', '.join(known) or 'none'})")
        return path

    def _check(self, job: Job, template: Path) -> dict[str, str]:
        """The request checks the engine makes before running, made now, so a bad job fails at submission."""
        from kai_flows.engine import EngineError, load_workflow
        from kai_flows.engine.runner import check_input_dir, resolve_parameters

        try:
            wf = load_workflow(template)
            input_params = json.loads(wf.annotations.get(INPUTS_ANNOTATION) or "{}")
            inputs = parse_inputs(job.input_uri, sorted(input_params))
            for name, folder in inputs.items():  # the job's folders and keys: its tenant's own, nothing else
                check_tenant_folder(job.tenant, f"input {name!r}", folder, self.tenants_dir)
            if self._out_given(job):
                check_tenant_folder(job.tenant, "output", self._out_dir(job, self.workflows_dir), self.tenants_dir)
            params = {k: _parameter_value(v) for k, v in job.parameters.items()}
            for name, param in input_params.items():
                if param in params:
                    check_input_key(job.tenant, f"parameter {param!r} (input {name!r})", params[param])
            checked = {n: check_input_dir(n, Path(p)) for n, p in inputs.items()}
            resolve_parameters(wf, params, checked, {n: f"inputs/{n}" for n in checked})
        except (EngineError, TenancyError) as e:
            raise BackendError(str(e)) from None
        return inputs

    def submit(self, job: Job) -> str:
        name = self.workflow_name(job.id, job.attempts)
        template = self._template(job.pipeline)
        inputs = self._check(job, template)
        tmp = self.workflows_dir / f".tmp-{name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        label = {"job_id": str(job.id), "attempt": job.attempts, "pipeline": job.pipeline,
                 "template": str(template), "queue_class": job.queue_class,
                 "parameters": {k: _parameter_value(v) for k, v in job.parameters.items()}, "inputs": inputs,
                 "out": self._out_dir(job, self.workflows_dir / name)}
        (tmp / "label.json").write_text(json.dumps(label))
        try:
            tmp.rename(self.workflows_dir / name)  # atomic: the workflow appears already labelled, or not at all
        except OSError:
            shutil.rmtree(tmp)
            return name  # created before (by us before a crash, or by another coordinator): never twice
        self._launch(name)
        return name

    @staticmethod
    def _out_given(job: Job) -> bool:
        return bool(job.output_uri) and (job.output_uri.startswith("file://") or "://" not in job.output_uri)

    @classmethod
    def _out_dir(cls, job: Job, d: Path) -> str:
        if cls._out_given(job):
            return str(Path(job.output_uri.removeprefix("file://")).expanduser().resolve())  # type: ignore[union-attr]
        return str(d / "out")

    def _launch(self, name: str, resume: str | None = None) -> None:
        d = self.workflows_dir / name
        launches = int((d / "launches").read_text()) if (d / "launches").is_file() else 0
        config, generation = self._store()
        _write_atomic(d / "launch.json", json.dumps({"store": config.model_dump(), "generation": generation,
                                                      "resume": resume, "warm_starts": self.warm_starts,
                                                      "cache": str(self.cache_dir)}), mode=0o600)
        (d / "pid").unlink(missing_ok=True)
        if (d / "result.json").is_file():  # kept, for the operator: why the earlier child did not finish
            os.replace(d / "result.json", d / f"result-{launches}.json")
        _write_atomic(d / "launches", str(launches + 1))
        with open(d / "engine.log", "ab") as log:
            # A session of its own: the job outlives a coordinator killed mid-way, as an Argo workflow would.
            self._children[name] = subprocess.Popen(
                [sys.executable, "-m", "kai_flows.ledger.local_backend", str(d)],
                start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    # -- follow -----------------------------------------------------------------------------------------------
    def _alive(self, name: str, d: Path) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        try:
            pid = int((d / "pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False
        return str(d).encode() in cmdline  # our child, not a process that reused its pid

    def _resume(self, name: str, d: Path, why: str) -> RunStatus | None:
        """Start the job again, resuming its engine run when one was recorded; None when out of tries."""
        launches = int((d / "launches").read_text()) if (d / "launches").is_file() else 1
        if launches >= MAX_LAUNCHES or (d / "cancelled").is_file():
            return None
        label = _read_json(d / "label.json") or {}
        record = _read_json(Path(label.get("out", d / "out")) / "run.json") or {}
        run = (record.get("kai") or {}).get("name")
        if record.get("phase") == "Succeeded":
            run = None  # finished but never reported (killed while writing its result): its outputs are complete
        self._launch(name, resume=run)
        return RunStatus("Running", (), f"resumed ({why})")

    def status(self, workflow_name: str) -> RunStatus:
        d = self._dir(workflow_name)
        result = _read_json(d / "result.json")
        if result is not None:
            self._children.pop(workflow_name, None)
            if result["phase"] == "Succeeded":
                return RunStatus("Succeeded", self._outputs(result["outputs"]))
            if result.get("generation") != self._generation_now() and not (d / "cancelled").is_file():
                resumed = self._resume(workflow_name, d, "its store was restarted under it")
                if resumed is not None:
                    return resumed
            return RunStatus(result["phase"], (), result.get("message") or f"engine run {result['phase']}")
        if (d / "pid").is_file():
            if self._alive(workflow_name, d):
                return RunStatus("Running")
            if (d / "result.json").is_file():  # it finished between the two reads
                return self.status(workflow_name)
            if (d / "cancelled").is_file():
                return RunStatus("Failed", (), "cancelled")
            return self._resume(workflow_name, d, "its engine process died") or RunStatus(
                "Error", (), f"engine process ended without a result, {MAX_LAUNCHES} times")
        if (d / "cancelled").is_file():
            return RunStatus("Failed", (), "cancelled")
        if not (d / "launches").is_file():
            self._launch(workflow_name)  # created, then its creator died before starting it
        elif workflow_name not in self._children and time.time() - (d / "launches").stat().st_mtime > START_GRACE_S:
            return RunStatus("Error", (), f"engine process did not start within {START_GRACE_S:.0f}s")
        return RunStatus("Pending")

    def _generation_now(self) -> str:
        if self._external is not None:
            return self._generation
        if self._server is not None and self._server.running:
            return self._generation
        return ""  # no store running here yet: any child's store is from an earlier coordinator

    @staticmethod
    def _outputs(outputs: Mapping[str, str | None]) -> tuple[JobOutput, ...]:
        found: list[JobOutput] = []
        for path in (Path(p) for p in outputs.values() if p):
            files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
            for f in files:
                digest = hashlib.sha256()
                with f.open("rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(chunk)
                found.append(JobOutput(f.resolve().as_uri(), digest.hexdigest(), f.stat().st_size))
        return tuple(found)

    def cancel(self, workflow_name: str) -> None:
        d = self._dir(workflow_name)
        # Marker first, pid second; the child writes its pid, then checks the marker: one of us sees the other.
        (d / "cancelled").touch()
        if (d / "result.json").is_file() or not (d / "pid").is_file() or not self._alive(workflow_name, d):
            return
        try:
            os.kill(int((d / "pid").read_text()), signal.SIGINT)  # the engine stops its steps, records Failed
        except ProcessLookupError:
            return
        child = self._children.get(workflow_name)
        if child is not None:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


# -- the child ------------------------------------------------------------------------------------------------
def _run_child(d: Path) -> int:
    """Run one job's pipeline with the engine and write result.json (also when the run fails or is cancelled)."""
    from kai_flows.engine import EngineError, run_pipeline
    from kai_flows.store import S3Config, StoreError

    label = json.loads((d / "label.json").read_text())
    launch = json.loads((d / "launch.json").read_text())
    _write_atomic(d / "pid", str(os.getpid()))
    result: dict[str, Any] = {"generation": launch["generation"], "outputs": {}}
    try:
        if (d / "cancelled").is_file():  # cancelled before we wrote our pid: nobody could signal us
            raise KeyboardInterrupt
        doc = yaml.safe_load(Path(label["template"]).read_text())
        # The job's queue class takes the workflow's semaphore, as the Submitter does for Argo.
        doc["spec"]["synchronization"] = {"semaphores": [{"configMapKeyRef": {
            "name": QUEUE_CONFIGMAP, "key": label["queue_class"]}}]}
        out = Path(label["out"])
        if not launch["resume"] and out.exists():
            # A fresh start of a job whose earlier launch died: its folder is the backend's own, and the engine
            # takes only an empty one (or the run it resumes), so the earlier launch's files go first.
            shutil.rmtree(out)
        res = run_pipeline(doc, parameters=label["parameters"], inputs={k: Path(v) for k, v in label["inputs"].items()},
                           out=Path(label["out"]), store=S3Config.model_validate(launch["store"]),
                           resume=launch["resume"], progress=False, cache=Path(launch["cache"]),
                           warm_starts=launch["warm_starts"])
        result.update(phase=res.phase, message=res.message, run=res.name,
                      outputs={k: str(v) if v else None for k, v in res.outputs.items()})
    except KeyboardInterrupt:
        result.update(phase="Failed", message="cancelled before the engine started")
    except (EngineError, StoreError) as e:
        result.update(phase="Failed", message=str(e))
    except Exception as e:
        result.update(phase="Error", message=f"{type(e).__name__}: {e}")
    _write_atomic(d / "result.json", json.dumps(result))
    return 0 if result["phase"] == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(_run_child(Path(sys.argv[1])))
