"""Steps in their real images: each attempt is a container started as its pod would start it (`--runtime container`).

What the pod spec says, and how it is honoured here (podman or docker):
- `image`: the image named in the template, which must be present locally (`kai-flows images build` makes it);
  `command` replaces the image's ENTRYPOINT and `args` its CMD, as Kubernetes does;
- `env` (literal values), `workingDir`;
- securityContext (the template's or workflow's pod context, the container's on top): runAsUser/runAsGroup,
  fsGroup and supplementalGroups as extra groups, runAsNonRoot checked against the effective user,
  readOnlyRootFilesystem (with no tmpfs added: only the declared mounts are writable), capabilities drop/add,
  allowPrivilegeEscalation: false as no-new-privileges, privileged;
- `resources.limits`: memory (with swap equal to it, so exceeding it is an OOM kill: exit 137, recorded as Argo
  records an OOMKilled pod) and cpu;
- emptyDir volumes and their mounts (a fresh host folder per attempt, mode 0777 as the kubelet makes them);
- input artifacts mounted at their declared paths (read-only: steps only read inputs); outputs read back from the
  declared paths (from a mounted volume, or copied out of the container's own filesystem, as Argo's executor does);
- stdout as the `result`.
Anything else a pod could carry (other volume kinds, env from Secrets, sidecars, init containers, probes) is
refused by name before the run starts. Steps get no network (`--network none`): they exchange data only through
artifacts, which the engine moves.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path, PurePosixPath

from kai_flows.containers import ContainerEngine, find_engine
from kai_flows.engine.launch.base import LaunchRequest
from kai_flows.engine.model import ArtifactDecl, EngineError, OutputParam, Template, TemplateError, Workflow
from kai_flows.engine.podspec import VolumeMount
from kai_flows.engine.process import KILL_GRACE_S, ProcessGroups, ProcessOutcome, run_process
from kai_flows.policy import CPU_FALLBACK_ANNOTATION

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Fields the loader records as cluster-only that this runtime acts on (suffixes of their field paths).
HONOURED = (".container.image", ".container.imagePullPolicy", ".container.env", ".container.resources",
            ".container.securityContext", ".container.volumeMounts", ".container.workingDir",
            "spec.securityContext", "spec.volumes", "].securityContext", "].volumes")
# An OOM kill shows as exit 137 with the peak at the limit; where the runtime does not report OOMKilled itself
# (podman with runc on cgroup v1 here), the peak within this fraction of the limit decides it.
OOM_PEAK_FRACTION = 0.97
_START_ERRORS = ("executable file not found", "no such file or directory", "permission denied: OCI")


class ImageMissing(EngineError):
    """A template's image is not present locally."""


class ContainerWorkspace:
    def __init__(self, engine: ContainerEngine, template: Template, scratch: Path, container: str) -> None:
        self.engine, self.template, self.scratch, self.container = engine, template, scratch, container
        self.inputs = scratch / "inputs" / "artifacts"
        self.volumes = scratch / "volumes"
        self.copied = scratch / "copied"
        for d in (self.inputs, self.volumes, self.copied):
            d.mkdir(parents=True)
        for m in template.pod.mounts:
            host = self.volume_dir(m)
            host.mkdir(parents=True, exist_ok=True)
            # The kubelet makes an emptyDir world-writable (0777); the step's non-root user writes into it.
            for d in (self.volumes / m.name, host):
                d.chmod(0o777)
        self.created = False
        self._copies = 0

    def volume_dir(self, m: VolumeMount) -> Path:
        return self.volumes / m.name / m.sub_path.strip("/") if m.sub_path else self.volumes / m.name

    def step_input(self, decl: ArtifactDecl) -> str:
        return decl.path

    def host_input(self, decl: ArtifactDecl) -> Path:
        return self.inputs / decl.name

    def step_output_artifact(self, decl: ArtifactDecl) -> str:
        return decl.path

    def step_output_parameter(self, op: OutputParam) -> str:
        return op.path

    def mount_of(self, step_path: str) -> tuple[VolumeMount, PurePosixPath] | None:
        """The declared mount holding `step_path` (the deepest one), and the path inside it."""
        path = PurePosixPath(step_path)
        best: tuple[VolumeMount, PurePosixPath] | None = None
        for m in self.template.pod.mounts:
            mp = PurePosixPath(m.mount_path)
            if (path == mp or mp in path.parents) and (best is None or len(mp.parts) > len(
                    PurePosixPath(best[0].mount_path).parts)):
                best = (m, path.relative_to(mp))
        return best

    def host_output(self, step_path: str) -> Path | None:
        found = self.mount_of(step_path)
        if found is not None:
            m, rel = found
            root = self.volume_dir(m)
            host = root.joinpath(*rel.parts)
            if not os.path.lexists(host):
                return None
            _check_confined(host, root, step_path)
            return host
        # Not on a volume: the container's own filesystem, copied out as Argo's executor copies it.
        if not self.created:
            return None
        self._copies += 1
        dest = self.copied / str(self._copies)
        proc = self.engine.run("cp", f"{self.container}:{step_path}", str(dest), check=False)
        if proc.returncode != 0 or not os.path.lexists(dest):
            return None
        _check_confined(dest, self.copied, step_path)
        return dest

    def close(self) -> None:
        if self.created:
            self.engine.run("rm", "--force", "--volumes", self.container, check=False)
            self.created = False


def _check_confined(host: Path, root: Path, step_path: str) -> None:
    """A step may leave symlinks in its outputs; none may lead the engine to a file outside them (the engine runs
    with more rights than the step, so following one would publish a host file)."""
    root = root.resolve()
    paths = [host] + ([p for p in host.rglob("*")] if host.is_dir() and not host.is_symlink() else [])
    for p in paths:
        if p.is_symlink():
            target = p.resolve()
            if target != root and root not in target.parents:
                raise EngineError(f"output {step_path!r}: {p.relative_to(host.parent)} is a symlink to "
                                  f"{os.readlink(p)!r}, outside the step's own files; nothing was published")


class ContainerLauncher:
    name = "container"

    def __init__(self, engine: str | None = None, **_: object) -> None:
        self.engine = find_engine(engine)
        self.instance = secrets.token_hex(4)
        self._users: dict[str, str] = {}  # image -> its configured USER
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._prune_exited()

    def _prune_exited(self) -> None:
        """Remove the exited containers of engines that were killed before they could (a running one may be
        another engine's live step, and stays)."""
        proc = self.engine.run("ps", "--all", "--filter", "label=kai-flows.io/engine", "--filter", "status=exited",
                               "--format", "{{.Names}}", check=False)
        names = proc.stdout.split() if proc.returncode == 0 else []
        if names:
            self.engine.run("rm", "--force", *names, check=False)

    # ---- before the run -----------------------------------------------------------------------------------
    def check(self, wf: Workflow) -> None:
        missing: list[str] = []
        for t in wf.templates.values():
            if t.kind != "container":
                continue
            where = f"{wf.source}: spec.templates[{t.name}]"
            self._check_template(t, where)
            if t.image not in missing and t.image not in self._users:
                info = self.engine.inspect_image(t.image) if t.image else None
                if info is None:
                    missing.append(t.image or f"<no image in {where}>")
                else:
                    self._users[t.image] = str((info.get("Config") or {}).get("User") or "")  # type: ignore[union-attr]
        if missing:
            raise ImageMissing(
                f"the container runtime needs image(s) not present in {self.engine.kind}: {', '.join(missing)}; "
                "build them with `kai-flows images build` (the same --registry/--tag the templates were compiled "
                "with), or run with the process runtime")

    def _check_template(self, t: Template, where: str) -> None:
        pod = t.pod
        for feature in pod.cluster_features:
            raise TemplateError(f"{where}: {feature.rsplit('.', 1)[-1]!r} is not supported by the container "
                                f"runtime ({feature})")
        for e in pod.env:
            if e.source:
                raise TemplateError(f"{where}.container.env[{e.name}]: {e.source} takes its value from the "
                                    "cluster (a Secret, ConfigMap or field); the container runtime supports "
                                    "literal values only")
        for m in pod.mounts:
            vol = pod.volume(m.name)
            if vol is None:
                raise TemplateError(f"{where}.container.volumeMounts[{m.name}]: no volume named {m.name!r} in "
                                    "spec.volumes or the template's volumes")
            if vol.kind != "emptyDir":
                raise TemplateError(f"{where}.container.volumeMounts[{m.name}]: volume {m.name!r} is a "
                                    f"{vol.kind}; the container runtime mounts emptyDir volumes only")
            if not PurePosixPath(m.mount_path).is_absolute():
                raise TemplateError(f"{where}.container.volumeMounts[{m.name}].mountPath: {m.mount_path!r} is "
                                    "not an absolute path")
        if t.gpus and t.annotations.get(CPU_FALLBACK_ANNOTATION) != "true":
            raise TemplateError(f"{where}: requests {t.gpus} GPU(s) without a CPU path (annotation "
                                f"{CPU_FALLBACK_ANNOTATION}); the container runtime gives containers no GPU")

    def honoured(self, field_path: str) -> bool:
        return any(field_path.endswith(h) for h in HONOURED)

    def workspace(self, template: Template, scratch: Path, pod_name: str) -> ContainerWorkspace:
        return ContainerWorkspace(self.engine, template, scratch, f"kai-{self.instance}-{pod_name}"[:250])

    # ---- one attempt --------------------------------------------------------------------------------------
    def _user_args(self, t: Template) -> list[str]:
        sc = t.pod.security
        image_user = self._users.get(t.image, "")
        image_uid, _, image_gid = image_user.partition(":")
        uid = str(sc.run_as_user) if sc.run_as_user is not None else image_uid
        gid = str(sc.run_as_group) if sc.run_as_group is not None else image_gid
        if sc.run_as_non_root:
            # The kubelet refuses to start such a container (CreateContainerConfigError): the pod never runs.
            if not uid:
                raise EngineError("container has runAsNonRoot and image will run as root")
            if not uid.isdigit():
                raise EngineError(f"container has runAsNonRoot and image has non-numeric user ({uid}), cannot "
                                  "verify user is non-root")
            if int(uid) == 0:
                raise EngineError("container's runAsUser breaks non-root policy")
        args: list[str] = []
        if uid or gid:
            args += ["--user", f"{uid or '0'}:{gid}" if gid else uid]
        for g in ([sc.fs_group] if sc.fs_group is not None else []) + list(sc.supplemental_groups):
            args += ["--group-add", str(g)]
        return args

    def _argv(self, ws: ContainerWorkspace, req: LaunchRequest, cgroup: str) -> list[str]:
        t, sc = req.template, req.template.pod.security
        args = ["run", "--name", ws.container, "--pull=never", "--network", "none",
                "--label", f"kai-flows.io/engine={self.instance}", "--label", f"kai-flows.io/pod={req.pod_name}",
                *self.engine.run_args(), *self._user_args(t)]
        if self.engine.kind == "podman":
            args += ["--cgroup-manager", "cgroupfs", "--cgroup-parent", cgroup]
        if sc.read_only_root_filesystem:
            args += ["--read-only"] + (["--read-only-tmpfs=false"] if self.engine.kind == "podman" else [])
        args += [a for cap in sc.drop for a in ("--cap-drop", cap)]
        args += [a for cap in sc.add for a in ("--cap-add", cap)]
        if not sc.allow_privilege_escalation:
            args += ["--security-opt", "no-new-privileges"]
        if sc.privileged:
            args += ["--privileged"]
        if t.memory_limit:
            args += ["--memory", str(t.memory_limit), "--memory-swap", str(t.memory_limit)]
        if t.cpu_limit:
            args += ["--cpus", f"{t.cpu_limit:g}"]
        env = dict(req.env)
        if t.gpus:
            env.update(CUDA_VISIBLE_DEVICES="", NVIDIA_VISIBLE_DEVICES="void")  # the declared CPU path
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        for m in t.pod.mounts:
            args += ["-v", f"{ws.volume_dir(m)}:{m.mount_path}" + (":ro" if m.read_only else "")]
        for decl in t.input_artifacts:
            host = ws.host_input(decl)
            if os.path.lexists(host):
                args += ["-v", f"{host}:{decl.path}:ro"]
        if t.pod.working_dir:
            args += ["--workdir", t.pod.working_dir]
        if t.command:
            args += ["--entrypoint", json.dumps(list(req.argv[:len(t.command)]))]
        args += [t.image, *req.argv[len(t.command):]]
        return self.engine.command(*args)

    def run(self, ws: ContainerWorkspace, req: LaunchRequest) -> ProcessOutcome:  # type: ignore[override]
        cgroup = f"/kai-flows/{self.instance}/{ws.container[-60:]}"
        argv = self._argv(ws, req, cgroup)
        ws.created = True
        with self._lock:
            self._running.add(ws.container)
        stop_hook = f"container:{ws.container}"
        req.groups.add_hook(stop_hook, lambda: self._stop(ws.container))
        timer: threading.Timer | None = None
        timed_out = threading.Event()
        if req.template.deadline is not None:
            def expire() -> None:
                timed_out.set()
                self._stop(ws.container)
            timer = threading.Timer(req.template.deadline, expire)
            timer.daemon = True
            timer.start()
        try:
            outcome = run_process(argv, cwd=ws.scratch, env=dict(os.environ), stdout_path=req.stdout_path,
                                  log_path=req.log_path, deadline_s=None, groups=_NoGroups())
        finally:
            if timer is not None:
                timer.cancel()
            req.groups.remove_hook(stop_hook)
            with self._lock:
                self._running.discard(ws.container)
        if outcome.exit_code in (125, 126, 127):
            # 125: the engine could not create the container; 126/127 with the OCI runtime's message: it could not
            # start the command. Neither is the step's own failure (a step may itself exit 126/127).
            last = _last_line(req.log_path)
            if outcome.exit_code == 125 or any(m in last for m in _START_ERRORS):
                raise OSError(f"{self.engine.kind} could not start the container: {last}")
        peak, cpu = _cgroup_figures(cgroup)
        state = self._state(ws.container)
        exit_code = int(state.get("ExitCode", outcome.exit_code if outcome.exit_code is not None else 137))
        outcome.exit_code, outcome.signal = exit_code, None
        outcome.timed_out = timed_out.is_set()
        outcome.stopped = req.groups.stopping and not outcome.timed_out and exit_code != 0
        if peak is not None:
            outcome.max_rss_bytes = peak
        if cpu is not None:
            outcome.cpu_s = cpu
        limit = req.template.memory_limit
        outcome.oom_killed = bool(state.get("OOMKilled")) or (
            exit_code == 137 and not outcome.timed_out and not outcome.stopped and bool(limit) and peak is not None
            and peak >= OOM_PEAK_FRACTION * float(limit or 0))
        _remove_cgroup(cgroup)
        return outcome

    def _state(self, container: str) -> dict[str, object]:
        proc = self.engine.run("inspect", "--format", "{{json .State}}", container, check=False)
        try:
            return json.loads(proc.stdout) if proc.returncode == 0 else {}
        except ValueError:
            return {}

    def _stop(self, container: str) -> None:
        self.engine.run("stop", "--time", str(int(KILL_GRACE_S)), container, check=False, timeout=60)

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        for name in running:
            self.engine.run("rm", "--force", name, check=False)
        _remove_cgroup(f"/kai-flows/{self.instance}")


class _NoGroups(ProcessGroups):
    """The container's own stop path is `podman stop`; the client process is not signalled as a group."""


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _cgroup_figures(cgroup: str) -> tuple[int | None, float | None]:
    """Peak memory (bytes) and CPU time (s) of everything that ran under `cgroup` (cgroup v1 or v2)."""
    rel = cgroup.lstrip("/")
    peak = cpu = None
    for path, kind in ((CGROUP_ROOT / "memory" / rel / "memory.max_usage_in_bytes", "peak"),
                       (CGROUP_ROOT / rel / "memory.peak", "peak"),
                       (CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage", "cpu_ns"),
                       (CGROUP_ROOT / rel / "cpu.stat", "cpu_stat")):
        try:
            text = path.read_text()
        except OSError:
            continue
        if kind == "peak" and peak is None:
            peak = int(text.strip())
        elif kind == "cpu_ns" and cpu is None:
            cpu = int(text.strip()) / 1e9
        elif kind == "cpu_stat" and cpu is None:
            usage = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
            cpu = int(usage.get("usage_usec", 0)) / 1e6
    return peak, cpu


def _remove_cgroup(cgroup: str) -> None:
    """Remove the cgroup folders podman created under `cgroup` (deepest first), in every hierarchy."""
    rel = cgroup.lstrip("/")
    roots = [p for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.is_dir() else []
    for root in [CGROUP_ROOT, *roots]:
        top = root / rel
        if not top.is_dir() or top.is_symlink():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_retry(d)
        _rmdir_retry(top)


def _rmdir_retry(d: Path) -> None:
    for _ in range(20):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # conmon may still be leaving it

