"""`run_pipeline`: check the request, set up the store, run the compiled WorkflowTemplate, collect the outputs.

Order matters for "bad input loses nothing": the template, the parameters and the input folders are all checked
before the store starts or anything runs; inputs are only read; the pipeline's outputs are downloaded into
`--out` only after the run, each one atomically (the store builds it beside its destination and renames it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import string
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kai_flows.argo.names import INPUTS_ANNOTATION, OUTPUTS_ANNOTATION, QUEUE_CONFIGMAP
from kai_flows.engine.artifacts import InputCache
from kai_flows.engine.executor import Executor, RunContext, new_uid
from kai_flows.engine.launch import make_launcher
from kai_flows.engine.load import load_workflow
from kai_flows.engine.model import EngineError, Workflow
from kai_flows.engine.pod import PodServices
from kai_flows.engine.process import ProcessGroups, process_start_time
from kai_flows.engine.progress import make_progress
from kai_flows.engine.records import Node, now_iso, read_run, registry_dir, write_json_atomic
from kai_flows.engine.semaphores import QueueSemaphores
from kai_flows.engine.store_guard import GuardedStore, StoreGuard
from kai_flows.store.errors import StoreError

RECORD_INTERVAL_S = 0.5


class RunRequestError(EngineError):
    """The run request is wrong (parameter, input folder, template); nothing ran."""


class NodeResult(BaseModel):
    id: str
    name: str
    display_name: str
    type: str
    template: str
    phase: str
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    memory_limit_bytes: int | None = None  # the pod's limit as run (a sized step's planned figure)
    over_memory_limit: bool = False
    retries: int = 0
    reused: bool = False
    outputs: dict[str, Any] = {}


class RunResult(BaseModel):
    name: str
    uid: str
    phase: str
    message: str = ""
    started_at: str
    finished_at: str | None = None
    nodes: dict[str, NodeResult] = {}
    outputs: dict[str, Path | None] = {}
    record: Path
    warnings: list[str] = []

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"

    def node(self, display_name: str) -> NodeResult:
        """The node whose display name (task name, or `task(i:item)`) is given."""
        for n in self.nodes.values():
            if n.display_name == display_name:
                return n
        raise KeyError(display_name)


def cache_dir() -> Path:
    env = os.environ.get("KAI_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kai-flows"


def find_template(pipeline: str | Path, templates_dir: Path | None = None) -> Path:
    """A path to a WorkflowTemplate file, or the name of one: in `templates_dir`, else in ./workflow_templates/
    (a project's own compiled templates), else among those shipped with kai-flows."""
    from kai_flows.resources import templates_dir as shipped

    path = Path(pipeline)
    if path.suffix in (".yaml", ".yml") or path.is_file() or os.sep in str(pipeline):
        if not path.is_file():
            raise RunRequestError(f"no WorkflowTemplate file at {path}")
        return path
    folders = [templates_dir] if templates_dir else [Path("workflow_templates"), shipped()]
    for folder in folders:
        if (folder / f"{pipeline}.yaml").is_file():
            return folder / f"{pipeline}.yaml"
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    raise RunRequestError(f"unknown pipeline {str(pipeline)!r}: no {pipeline}.yaml in "
                          + " or ".join(str(f) for f in folders) + (f" (known: {', '.join(known)})" if known else ""))


def _json_annotation(wf: Workflow, key: str) -> dict[str, str]:
    raw = wf.annotations.get(key)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise RunRequestError(f"{wf.source}: annotation {key} is not JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RunRequestError(f"{wf.source}: annotation {key} must map names to strings")
    return value


def check_input_dir(name: str, path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise RunRequestError(f"input {name!r}: folder {path} does not exist")
    if not path.is_dir():
        raise RunRequestError(f"input {name!r}: {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise RunRequestError(f"input {name!r}: folder {path} is not readable")
    def unreadable(e: OSError) -> None:
        raise RunRequestError(f"input {name!r}: cannot read {e.filename}: {e.strerror}")

    count = 0
    for root, dirs, files in os.walk(path, onerror=unreadable):
        for d in dirs:
            if not os.access(Path(root) / d, os.R_OK | os.X_OK):
                raise RunRequestError(f"input {name!r}: folder {Path(root) / d} is not readable")
        for f in files:
            if not os.access(Path(root) / f, os.R_OK):
                raise RunRequestError(f"input {name!r}: file {Path(root) / f} is not readable")
            _check_utf8_name(name, Path(root) / f)
            count += 1
    if count == 0:
        raise RunRequestError(f"input {name!r}: folder {path} is empty")
    return path.resolve()


def _check_utf8_name(name: str, path: Path) -> None:
    """S3 keys (and Argo's JSON) are UTF-8: a file name that is not cannot be stored under its name."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", errors="backslashreplace")
        raise RunRequestError(f"input {name!r}: file name {shown} is not UTF-8 (S3 keys are); rename the file") \
            from None


INPUT_KEY_PREFIX = "inputs/sha256-"


def _content_key(name: str, digest: str) -> str:
    """Where a local input with this content digest is stored: the same photos, the same key."""
    return f"{INPUT_KEY_PREFIX}{digest[:40]}/{name}"


def _input_key(name: str, folder: Path) -> str:
    from kai_flows.store.errors import LocalPathError
    from kai_flows.store.manifest import content_digest

    try:
        return _content_key(name, content_digest(folder))
    except LocalPathError as e:
        raise RunRequestError(f"input {name!r}: {e}") from None


def _upload_input(st: Any, name: str, local: Path, key: str) -> None:
    """Publish a local input at its content key; if the folder changed between hashing and uploading, withdraw
    it again (a content key must hold exactly that content) and refuse the run."""
    manifest = st.upload(local, key, replace=False)
    if _content_key(name, manifest.content_digest()) != key:
        st.delete(key)
        raise RunRequestError(f"input {name!r}: {local} changed while it was being uploaded; run again when it "
                              "has settled")


def _check_inputs_unchanged(wf: Workflow, previous_meta: Mapping[str, Any], input_keys: Mapping[str, str],
                            folders: Mapping[str, Path], resume: str) -> None:
    """A resumed run keeps its parameters, input keys included (as Argo's retry does): refuse an input folder whose
    content differs from what the run stored (changed since, or another folder), instead of mixing steps computed
    from two different photo sets."""
    before = previous_meta.get("parameters", {})
    for name, param in _json_annotation(wf, INPUTS_ANNOTATION).items():
        old, new = before.get(param), input_keys.get(name)
        if new is not None and old is not None and old.startswith(INPUT_KEY_PREFIX) and old != new:
            stored = previous_meta.get("inputs", {}).get(name, "?")
            given = str(folders[name])
            what = f"{given} changed since run {resume!r} stored it" if given == stored else \
                f"--resume {resume} ran on {stored}; {given} holds other files"
            raise RunRequestError(f"input {name!r}: {what}; start a new run instead of resuming")


def resolve_parameters(wf: Workflow, given: Mapping[str, str], inputs: Mapping[str, Path],
                       keys_for_inputs: Mapping[str, str]) -> dict[str, str]:
    """The workflow's parameters: given values, then input keys, then defaults; every one checked."""
    input_map = _json_annotation(wf, INPUTS_ANNOTATION)
    for name in inputs:
        if name not in input_map:
            raise RunRequestError(f"unknown input {name!r}; {wf.name} takes "
                                  + (", ".join(sorted(input_map)) or "no inputs"))
    known = {p.name for p in wf.params}
    for name in given:
        if name not in known:
            raise RunRequestError(f"unknown parameter {name!r}; {wf.name} takes {', '.join(sorted(known)) or 'none'}")
    values: dict[str, str] = {}
    for p in wf.params:
        input_name = next((i for i, par in input_map.items() if par == p.name), None)
        if p.name in given:
            value: str | None = str(given[p.name])
        elif input_name is not None and input_name in keys_for_inputs:
            value = keys_for_inputs[input_name]
        else:
            value = p.value
        if value is None:
            hint = f" (give the input folder with --input {input_name}=DIR)" if input_name else ""
            raise RunRequestError(f"missing parameter {p.name!r}{hint}")
        if p.enum and value not in p.enum:
            raise RunRequestError(f"parameter {p.name!r}: {value!r} is not one of {', '.join(p.enum)}")
        if input_name is not None:
            _check_input_key(p.name, input_name, value)
        values[p.name] = value
    return values


def _check_out(out: Path, resume: str | None) -> None:
    """`--out` holds one run's outputs: an empty or new folder, or the folder of the run being resumed. A second
    run's files beside a first run's would be read as one run's (old models beside a new rejection report)."""
    if out.exists() and not out.is_dir():
        raise RunRequestError(f"--out {out} is a file; give a folder (new or empty)")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            owner = ""
            try:
                owner = json.loads((out / "run.json").read_text()).get("kai", {}).get("name", "")
            except (OSError, ValueError):
                pass
            if not (resume and owner == resume):
                held = f"the outputs of run {owner}" if owner else f"{len(entries)} entries ({', '.join(entries[:3])}"\
                    + (", ..." if len(entries) > 3 else "") + ")"
                raise RunRequestError(f"--out {out} already holds {held}; give a new or empty folder (or remove "
                                      "them): one folder holds one run's outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".kai-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunRequestError(f"--out {out} cannot be created or written: {e.strerror or e}") from None


def engine_identity() -> dict[str, Any]:
    """Which process runs the engine (host, pid and its start time), so a record left `Running` by a killed engine
    can be told from a live run."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidStart": process_start_time(os.getpid())}


def engine_alive(record: dict[str, Any]) -> bool | None:
    """Whether the engine that wrote `record` still runs (None: it ran on another host, or recorded no pid)."""
    ident = record.get("kai", {}).get("engine") or {}
    if not ident.get("pid") or ident.get("host") != socket.gethostname():
        return None
    start = process_start_time(int(ident["pid"]))
    return bool(start) and start == ident.get("pidStart")


def _check_input_key(param: str, input_name: str, value: str) -> None:
    """A parameter carrying an input's location names a key in the run's bucket, never a path on this machine:
    the engine runs with more rights than whoever submitted the parameter (the coordinator takes it from a job)."""
    from kai_flows.store.errors import InvalidKeyError
    from kai_flows.store.manifest import check_key

    try:
        check_key(value)
    except InvalidKeyError as e:
        hint = f"; a folder on this machine is given with --input {input_name}=DIR" if value.startswith("/") else ""
        raise RunRequestError(f"parameter {param!r} carries the S3 key of input {input_name!r}: {e}{hint}") from None


def _has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() and shutil.which("nvidia-smi") is not None


def _run_name(wf: Workflow) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{wf.name[:57]}-{suffix}"


EXTRA_STORES = 8  # default store folders tried when runs overlap: <cache>/store, <cache>/store-2 ... store-8


@contextmanager
def _open_store(store: Any, store_dir: Path | None, cache: Path,
                previous_dir: str | None = None) -> Iterator[tuple[Any, Path | None, Any]]:
    """An ArtifactStore, its embedded server's folder and the server: the store given, an S3Config (or KAI_S3_*
    env), or an embedded SeaweedFS in `store_dir`, else (a resumed run) in the folder its artifacts are in, else in
    the first free default folder under `cache`."""
    from kai_flows.store import ArtifactStore, EmbeddedSeaweedFS, S3Config, StoreDirInUseError

    if isinstance(store, ArtifactStore):
        yield store, None, None
        return
    config = store if isinstance(store, S3Config) else S3Config.from_env()
    if config is not None:
        s = ArtifactStore(config)
        s.ensure_bucket()
        yield s, None, None
        return
    if store_dir is not None or previous_dir is not None:
        folders = [Path(store_dir or previous_dir)]  # type: ignore[arg-type]
    else:  # two runs at once each get their own server: one SeaweedFS per data folder
        folders = [cache / "store", *(cache / f"store-{n}" for n in range(2, EXTRA_STORES + 1))]
    for i, folder in enumerate(folders):
        server = EmbeddedSeaweedFS(folder)
        try:
            server.start()
        except StoreDirInUseError:
            if len(folders) == 1:
                raise
            if i == len(folders) - 1:
                raise StoreDirInUseError(f"all {len(folders)} store folders under {cache} (store, store-2 ... "
                                         f"store-{EXTRA_STORES}) are in use by other runs; wait for one to end, or "
                                         "give --store-dir") from None
            continue
        try:
            yield server.store(warm_up=True), folder, server
        finally:
            server.stop()
        return


@contextmanager
def _sigint_stops(executor_ref: list[Executor]) -> Iterator[None]:
    """SIGINT stops the steps (killpg) and lets the run record itself as Failed, instead of a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if executor_ref:
            executor_ref[0].stop("Stopped by the user (SIGINT)")
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    prev_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, prev_term)


class _Recorder:
    """Writes run.json (out dir and registry) atomically, at most every RECORD_INTERVAL_S while running."""

    def __init__(self, paths: list[Path], meta: dict[str, Any]) -> None:
        self.paths, self.meta = paths, meta
        self.last = 0.0

    def status(self, ex: Executor, phase: str, message: str, started: str, finished: str | None) -> dict[str, Any]:
        pods = [n for n in ex.nodes.values() if n.type == "Pod"]
        done = sum(1 for n in pods if n.phase == "Succeeded")
        kai = dict(self.meta)
        kai["warnings"] = list(ex.warnings)
        kai["totals"] = {
            "wallSeconds": round(sum(n.kai.get("wallSeconds", 0) for n in pods), 3),
            "cpuSeconds": round(sum(n.kai.get("cpuSeconds", 0) for n in pods), 3),
            "peakMemoryBytes": max((n.kai.get("peakMemoryBytes", 0) for n in pods), default=0),
        }
        out: dict[str, Any] = {"phase": phase, "startedAt": started}
        if finished:
            out["finishedAt"] = finished
        out["progress"] = f"{done}/{len(pods)}"
        if message:
            out["message"] = message
        out["nodes"] = {n.id: n.to_argo() for n in ex.nodes.values()}
        out["kai"] = kai
        return out

    def due(self) -> bool:
        return time.monotonic() - self.last >= RECORD_INTERVAL_S

    def write(self, data: dict[str, Any], force: bool = False) -> None:
        """Each copy on its own: a full disk under --out must not keep the registry's copy Running."""
        self.last = time.monotonic()
        failed: list[OSError] = []
        for p in self.paths:
            try:
                write_json_atomic(p, data, fsync=force)
            except OSError as e:
                failed.append(e)
        if len(failed) == len(self.paths):
            raise failed[0]


def _previous_nodes(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    prev: dict[str, dict[str, Any]] = {}
    for node_id, n in record.get("nodes", {}).items():
        prev[n["name"]] = n
        prev["#id:" + node_id] = n
    return prev


def run_pipeline(
    template: str | Path | Mapping[str, Any],
    *,
    parameters: Mapping[str, str] | None = None,
    inputs: Mapping[str, Path] | None = None,
    out: Path,
    parallelism: int | None = None,
    store: Any = None,
    store_dir: Path | None = None,
    resume: str | None = None,
    progress: bool = True,
    keep_scratch: bool = False,
    cache: Path | None = None,
    warm_starts: bool = True,
    runtime: str = "process",
    container_engine: str | None = None,
) -> RunResult:
    """Run a compiled WorkflowTemplate locally; see the module docstring. Raises EngineError (one line) for a
    bad request, before anything runs; a run that starts always returns a RunResult (also when it fails).
    `warm_starts`: fork entry-point steps from a process that already imported their module (zygote.py);
    False starts every step as a fresh `python -m kai_flows.entrypoint`, paying its imports as a pod does.
    `runtime`: "process" (default: host processes, no images) or "container" (each step in its image, with its
    pod's security context and limits; `container_engine` names podman or docker, else the one on PATH)."""
    if parallelism is not None and parallelism < 1:
        raise RunRequestError(f"--parallelism {parallelism}: at least 1 step must be able to run at a time")
    cache = Path(cache) if cache else cache_dir()
    parameters = dict(parameters or {})
    inputs = {k: Path(v) for k, v in (inputs or {}).items()}
    if isinstance(template, Mapping):
        wf, template_ref = load_workflow(template), "<dict>"
    else:
        path = find_template(template)
        wf, template_ref = load_workflow(path), str(path.resolve())
    previous: dict[str, Any] = {}
    previous_meta: dict[str, Any] = {}
    if resume:
        record = read_run(cache, resume)
        meta = previous_meta = record.get("kai", {})
        if meta.get("template") != wf.name:
            raise RunRequestError(f"run {resume!r} ran pipeline {meta.get('template')!r}, not {wf.name!r}")
        if record.get("phase") == "Succeeded":
            raise RunRequestError(f"run {resume!r} already Succeeded; nothing to resume")
        run_name, uid = resume, meta.get("uid") or new_uid()
        parameters = {**meta.get("parameters", {}), **parameters}
        previous = _previous_nodes(record)
        if not inputs:
            inputs = {k: Path(v) for k, v in meta.get("inputs", {}).items()}
    else:
        run_name, uid = _run_name(wf), new_uid()
    checked_inputs = {name: check_input_dir(name, p) for name, p in inputs.items()}
    # Inputs are stored by content: re-running on the same photos re-uses them instead of uploading them again.
    input_keys = {name: _input_key(name, p) for name, p in checked_inputs.items()}
    if resume:
        _check_inputs_unchanged(wf, previous_meta, input_keys, checked_inputs, resume)
    params = resolve_parameters(wf, parameters, checked_inputs, input_keys)
    outputs_map = _json_annotation(wf, OUTPUTS_ANNOTATION)
    out = Path(out).expanduser().resolve()
    for name, p in checked_inputs.items():
        if out == p or p in out.parents:
            raise RunRequestError(f"--out {out} is inside input {name!r} ({p}); inputs are never written to")
    _check_out(out, resume)
    launcher = make_launcher(runtime, **({"engine": container_engine} if runtime == "container" else
                                         {"env": _step_env(), "cwd": Path.cwd(), "warm_starts": warm_starts}))
    try:
        launcher.check(wf)  # refuses what it cannot honour, before anything runs
        has_gpu = _has_gpu()
        run_dir = registry_dir(cache) / run_name
        # A folder of this engine process's own: steps orphaned by an earlier, killed engine cannot touch it.
        scratch_all = run_dir / "scratch"
        scratch = scratch_all / secrets.token_hex(4)
        logs = out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        from kai_flows.policy import load_policy

        limits = {k: q.concurrency for k, q in load_policy().queues.items()}
        semaphores = QueueSemaphores(cache / "semaphores", limits)
        meta = {"name": run_name, "uid": uid, "template": wf.name, "templateFile": template_ref,
                "parameters": params, "inputs": {k: str(v) for k, v in checked_inputs.items()}, "out": str(out),
                "ignoredFields": [f for f in wf.ignored if not launcher.honoured(f)], "runtime": launcher.name,
                "resumedFrom": resume, "engine": engine_identity()}
        # The registry's copy first: --resume reads it, so a kill between the two writes leaves the copy resume
        # reads at least as far along as the one in --out (the other order re-ran a step already recorded done).
        recorder = _Recorder([run_dir / "run.json", out / "run.json"], meta)
        started = now_iso()
        view = make_progress(progress, run_name)
        result_outputs: dict[str, Path | None] = {}
        ex_ref: list[Executor] = []
        store_notes: list[str] = []  # the store guard's (restarts), from its own thread

        def stop_run(reason: str) -> None:
            if ex_ref:
                ex_ref[0].stop(reason, cause="store")
    except BaseException:
        launcher.close()  # the run below closes it; a failure before that must too (warm servers, containers)
        raise
    phase, message = "Error", ""
    try:
        previous_store = (previous_meta.get("store") or {}).get("dir")
        with _open_store(store, store_dir, cache, previous_store) as (raw_store, st_dir, server), \
                _sigint_stops(ex_ref), \
                StoreGuard(raw_store, server, on_lost=stop_run, note=store_notes.append) as guard:
            st = GuardedStore(raw_store, guard)
            meta["store"] = {"endpoint": st.config.endpoint, "bucket": st.bucket,
                             **({"dir": str(st_dir)} if st_dir else {})}
            used_keys = set(params.values())  # a resumed run from an older version may name other keys
            for name, local in checked_inputs.items():
                if input_keys[name] not in used_keys:
                    continue
                if st.exists(input_keys[name]):
                    view.note(f"input {name}: the same content is already in the store")
                else:
                    view.note(f"uploading input {name} from {local}")
                    _upload_input(st, name, local, input_keys[name])
            services = PodServices(store=st, inputs=InputCache(st, scratch / "_inputs"), groups=ProcessGroups(),
                                   launcher=launcher, keep_scratch=keep_scratch)
            ctx = RunContext(run_name=run_name, uid=uid, params=params, services=services, scratch_root=scratch,
                             logs_dir=logs, parallelism=parallelism or os.cpu_count() or 1, semaphores=semaphores,
                             has_gpu=has_gpu, previous=previous)
            ex = Executor(wf, ctx)
            ex.on_warning = view.note
            ex_ref.append(ex)

            def tick() -> None:
                view.update(ex.nodes.values(), "Running")
                if recorder.due():
                    recorder.write(recorder.status(ex, "Running", "", started, None))

            wf_slots = _acquire_workflow_semaphores(ex, semaphores, wf, view, tick)
            try:
                root = ex.run_root(wf.templates[wf.entrypoint], run_name, run_name, tick,
                                   deadline_s=wf.deadline) if wf_slots is not None else None
                phase = root.phase if root is not None else "Failed"
                phase = "Error" if phase == "Error" else ("Succeeded" if phase == "Succeeded" else "Failed")
                message = ex.stop_reason or (root.message if root is not None else "Stopped")
                if phase != "Succeeded" and not message:
                    failed = ex.failures()
                    message = (f"child '{failed[0]['displayName']}' {failed[0]['phase'].lower()}: "
                               f"{failed[0]['message']}") if failed else "a task failed"
                if wf.on_exit and ex.stopping and ex.stop_cause == "deadline":
                    ex.resume_for_exit_handler()  # Argo runs the exit handler after a deadline too
                if wf.on_exit and not ex.stopping:
                    ex.status = phase
                    exit_node = ex.run_root(wf.templates[wf.on_exit], f"{run_name}.onExit", f"{run_name}.onExit",
                                            tick)
                    if exit_node.phase != "Succeeded" and phase == "Succeeded":
                        phase, message = "Failed", f"exit handler {wf.on_exit!r} {exit_node.phase.lower()}"
            finally:
                for slot in wf_slots or []:
                    slot.release()
            if guard.lost:
                phase, message = "Error", guard.lost
            # Whatever finished is kept: a failed run still hands over the outputs of the tasks that succeeded,
            # the exit handler's failure report among them.
            if not ex.stopping:
                try:
                    result_outputs = _download_outputs(st, ex, run_name, outputs_map, out)
                except (StoreError, OSError) as e:  # a full disk, a lost store: the run ends, its record too
                    phase, message = "Error", f"downloading the outputs into --out {out} failed: {e}"
            ex.warnings.extend(store_notes)
            meta["outputs"] = {k: str(v) if v else None for k, v in result_outputs.items()}
            recorder.write(recorder.status(ex, phase, message, started, now_iso()), force=True)
            view.update(ex.nodes.values(), phase)
    finally:
        view.close()
        for started_ex in ex_ref:
            started_ex.pool.shutdown(wait=False)
        launcher.close()
        if not keep_scratch:
            shutil.rmtree(scratch_all, ignore_errors=True)
    finished = now_iso()
    nodes = {n.id: _node_result(n) for n in ex.nodes.values()}
    return RunResult(name=run_name, uid=uid, phase=phase, message=message, started_at=started, finished_at=finished,
                     nodes=nodes, outputs=result_outputs, record=out / "run.json", warnings=list(ex.warnings))


def _step_env() -> dict[str, str]:
    """The engine's environment, with the working directory importable: a user's own step modules there run
    as kai-flows' installed ones (kai_steps) do."""
    env = dict(os.environ)
    paths = [os.getcwd()]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _acquire_workflow_semaphores(ex: Executor, sems: QueueSemaphores, wf: Workflow, view: Any,
                                 tick: Any) -> list[Any] | None:
    if not wf.semaphores:
        return []
    noted = False
    while True:
        slots = sems.try_acquire_all(wf.semaphores)
        if slots is not None:
            return slots
        if ex.stopping:
            return None
        if not noted:
            view.note("waiting for a slot of queue " + ", ".join(f"{QUEUE_CONFIGMAP}/{k}" for k in wf.semaphores))
            noted = True
        tick()
        time.sleep(0.2)


def _download_outputs(st: Any, ex: Executor, run_name: str, outputs_map: Mapping[str, str],
                      out: Path) -> dict[str, Path | None]:
    results: dict[str, Path | None] = {}
    by_name = {n.name: n for n in ex.nodes.values()}
    for out_name, ref in outputs_map.items():
        task, _, art = ref.rpartition(".")  # "<task>.<artifact>", or "onExit.<task>.<artifact>" for the exit handler
        node = by_name.get(f"{run_name}.{task}")
        key = None
        for a in ((node.outputs or {}).get("artifacts", []) if node else []):
            if a["name"] == art:
                key = a["s3"]["key"]
        if key is None:
            results[out_name] = None  # the task was skipped or declared the output optional
            continue
        dest = out / out_name
        staging = out / f".{out_name}.kai-download"
        _remove(staging)
        try:
            st.download(key, staging)
        except BaseException as e:
            _remove(staging)  # never a partial output (and a full disk gets its space back for run.json)
            if isinstance(e, (StoreError, OSError)):
                raise type(e)(f"output {out_name!r}: {e}") from None
            raise
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        os.replace(staging, dest)
        results[out_name] = dest
    return results


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _node_result(n: Node) -> NodeResult:
    return NodeResult(
        id=n.id, name=n.name, display_name=n.display_name, type=n.type, template=n.template_name, phase=n.phase,
        message=n.message, started_at=n.started_at, finished_at=n.finished_at,
        wall_seconds=n.kai.get("wallSeconds"), cpu_seconds=n.kai.get("cpuSeconds"),
        peak_memory_bytes=n.kai.get("peakMemoryBytes"), memory_limit_bytes=n.kai.get("memoryLimitBytes"),
        over_memory_limit=bool(n.kai.get("overMemoryLimit")),
        retries=int(n.kai.get("retries", 0)), reused=bool(n.kai.get("reused")), outputs=n.outputs or {},
    )


def runs_table(cache: Path | None = None) -> list[dict[str, Any]]:
    """Past runs (newest first) as rows: name, pipeline, phase, started, finished, progress."""
    from kai_flows.engine.records import list_runs

    rows = []
    for r in list_runs(Path(cache) if cache else cache_dir()):
        kai = r.get("kai", {})
        phase, message = r.get("phase", "?"), r.get("message", "")
        if phase in ("Running", "Pending") and engine_alive(r) is False:
            phase, message = "Interrupted", "the engine stopped without finishing the run (killed?); --resume it"
        rows.append({"name": kai.get("name", "?"), "pipeline": kai.get("template", "?"), "phase": phase,
                     "started": r.get("startedAt", ""), "finished": r.get("finishedAt", ""),
                     "progress": r.get("progress", ""), "message": message, "out": kai.get("out", "")})
    return rows

