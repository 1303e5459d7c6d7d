"""Steps in their real images: each attempt is a container started as its pod would start it (`--runtime container`).

What the pod spec says, and how it is honoured here (podman or docker):
- `image`: the image named in the template, which must be present locally (`kai-flows images build` makes it; a
  local image stands for the registry's, whatever `imagePullPolicy` says); `command` replaces the image's
  ENTRYPOINT and `args` its CMD, as Kubernetes does;
- `env` (literal values), `workingDir`;
- securityContext (the template's or workflow's pod context, the container's on top): runAsUser/runAsGroup,
  fsGroup and supplementalGroups as extra groups, runAsNonRoot checked against the effective user (the kubelet's
  refusal is an Error, the pod never runs), readOnlyRootFilesystem (no tmpfs added: only the declared mounts and
  /dev/shm, as in a pod, are writable), capabilities drop/add, allowPrivilegeEscalation: false as
  no-new-privileges, privileged, the RuntimeDefault seccomp profile (the engine's default);
- `resources.limits`: memory (swap equal to it, so exceeding it is an OOM kill: exit 137, recorded as Argo
  records an OOMKilled pod) and cpu;
- emptyDir volumes and their mounts (a fresh host folder per attempt, mode 0777 as the kubelet makes them); a
  `sizeLimit` exceeded fails the pod as the kubelet's eviction does (checked when the step ends);
- input artifacts mounted at their declared paths (read-only: steps only read inputs); outputs read back from the
  declared paths (from a mounted volume, or copied out of the container's own filesystem, as Argo's executor does);
- stdout as the `result`; `activeDeadlineSeconds`/`timeout` stop the container.
Anything else a pod could carry is refused by name before the run starts (container_checks.py). Steps get no
network (`--network none`): they exchange data only through artifacts, which the engine moves.

The container is created first and started attached, so that a stop or a deadline always finds it. Each container
is named after the engine process that owns it (pid and its start time), and a new launcher removes the containers
of engines that no longer run (killed before they could clean up).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path

from kai_flows.containers import ContainerEngineError, find_engine
from kai_flows.engine.launch import cgroups
from kai_flows.engine.launch.base import LaunchRequest
from kai_flows.engine.launch.container_checks import check_template
from kai_flows.engine.launch.container_workspace import ContainerWorkspace
from kai_flows.engine.model import EngineError, Template, Workflow
from kai_flows.engine.process import KILL_GRACE_S, ProcessGroups, ProcessOutcome, process_start_time, run_process

# Fields the loader records as cluster-only that this runtime acts on (suffixes of their field paths).
HONOURED = (".container.image", ".container.imagePullPolicy", ".container.env", ".container.resources",
            ".container.securityContext", ".container.volumeMounts", ".container.workingDir",
            "spec.securityContext", "spec.volumes", "].securityContext", "].volumes")
# An OOM kill shows as exit 137 with the peak at the limit; where the runtime does not report OOMKilled itself
# (podman with runc on cgroup v1 here), the peak within this fraction of the limit decides it.
OOM_PEAK_FRACTION = 0.97
NAME_PREFIX = "kai-"
_OWNED = re.compile(r"^kai-(\d+)-(\d+)-[0-9a-f]{8}-")  # kai-<engine pid>-<its start time>-<instance>-<pod>
_NEVER_STARTED = "0001-01-01"  # State.StartedAt of a container that never ran


class ImageMissing(EngineError):
    """A template's image is not present locally."""


class ContainerLauncher:
    name = "container"
    uses_template_env = True

    def __init__(self, engine: str | None = None, **_: object) -> None:
        self.engine = find_engine(engine)
        self.instance = secrets.token_hex(4)
        pid = os.getpid()
        self.prefix = f"{NAME_PREFIX}{pid}-{process_start_time(pid) or 0}-{self.instance}-"
        self._users: dict[str, str] = {}  # image -> its configured USER
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._prune_orphans()

    def _prune_orphans(self) -> None:
        """Remove the containers of engines that no longer run (killed before they could remove them)."""
        proc = self.engine.run("ps", "--all", "--filter", "label=kai-flows.io/engine", "--format", "{{.Names}}",
                               check=False)
        orphans = []
        for name in proc.stdout.split() if proc.returncode == 0 else []:
            m = _OWNED.match(name)
            if m and process_start_time(int(m.group(1))) != m.group(2):
                orphans.append(name)
        if orphans:
            self.engine.run("rm", "--force", *orphans, check=False)

    # ---- before the run -----------------------------------------------------------------------------------
    def check(self, wf: Workflow) -> None:
        missing: list[str] = []
        for t in wf.templates.values():
            if t.kind != "container":
                continue
            where = f"{wf.source}: spec.templates[{t.name}]"
            check_template(t, where)
            if t.image not in missing and t.image not in self._users:
                try:
                    info = self.engine.inspect_image(t.image) if t.image else None
                except ContainerEngineError as e:
                    raise EngineError(f"--runtime container: {e}") from None
                if info is None:
                    missing.append(t.image or f"<no image in {where}>")
                else:
                    self._users[t.image] = str((info.get("Config") or {}).get("User") or "")  # type: ignore[union-attr]
        if missing:
            raise ImageMissing(
                f"the container runtime needs image(s) not present in {self.engine.kind}: {', '.join(missing)}; "
                "build them with `kai-flows images build` (the same --registry/--tag the templates were compiled "
                "with), or run with the process runtime")

    def honoured(self, field_path: str) -> bool:
        return any(field_path.endswith(h) for h in HONOURED)

    def workspace(self, template: Template, scratch: Path, pod_name: str) -> ContainerWorkspace:
        return ContainerWorkspace(self.engine, template, scratch, (self.prefix + pod_name)[:250])

    # ---- one attempt --------------------------------------------------------------------------------------
    def _user_args(self, t: Template) -> list[str]:
        sc = t.pod.security
        image_uid, _, image_gid = self._users.get(t.image, "").partition(":")
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

    def _create_args(self, ws: ContainerWorkspace, req: LaunchRequest, cgroup: str) -> list[str]:
        """The arguments of `<engine> create` for this attempt."""
        t, sc = req.template, req.template.pod.security
        podman = self.engine.kind == "podman"
        args = ["create", "--name", ws.container, "--pull=never", "--network", "none",
                "--label", f"kai-flows.io/engine={self.instance}", "--label", f"kai-flows.io/pod={req.pod_name}",
                *self.engine.run_args(), *self._user_args(t)]
        if podman:
            args += ["--cgroup-manager", "cgroupfs", "--cgroup-parent", cgroup]
        if sc.read_only_root_filesystem:
            args += ["--read-only"]
            if podman:  # podman would add writable tmpfs at /tmp, /var/tmp and /run, which a pod has not (its
                args += ["--read-only-tmpfs=false"]  # /dev/shm stays writable, as in a pod)
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
        command, rest = req.argv[:len(t.command)], req.argv[len(t.command):]
        if command and podman:
            args += ["--entrypoint", json.dumps(command)]  # podman reads a JSON list as the whole entry point
        elif command:
            args += ["--entrypoint", command[0]]  # docker takes one program; the rest go before the args
            rest = command[1:] + rest
        return [*args, t.image, *rest]

    def run(self, ws: ContainerWorkspace, req: LaunchRequest) -> ProcessOutcome:  # type: ignore[override]
        cgroup = f"/kai-flows/{self.instance}/{ws.container[-60:]}"
        try:
            created = self.engine.run(*self._create_args(ws, req, cgroup), check=False)
        except ContainerEngineError as e:
            raise OSError(str(e)) from None
        if created.returncode != 0:
            last = (created.stderr.strip() or created.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise OSError(f"{self.engine.kind} could not create the container: {last[0]}")
        ws.created = True
        with self._lock:
            self._running.add(ws.container)
        # Only now can a stop or a deadline reach it.
        stop_hook = f"container:{ws.container}"
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        if req.template.deadline is not None:
            def expire() -> None:
                timed_out.set()
                self._stop(ws.container)
            timer = threading.Timer(req.template.deadline, expire)
            timer.daemon = True
            timer.start()
        req.groups.add_hook(stop_hook, lambda: self._stop(ws.container))
        try:
            outcome = run_process(self.engine.command("start", "--attach", ws.container), cwd=ws.scratch,
                                  env=dict(os.environ), stdout_path=req.stdout_path, log_path=req.log_path,
                                  deadline_s=None, groups=ProcessGroups())  # stopped via the hook, not the client
        finally:
            if timer is not None:
                timer.cancel()
            req.groups.remove_hook(stop_hook)
            with self._lock:
                self._running.discard(ws.container)
        state = self._state(ws.container)
        if str(state.get("StartedAt", _NEVER_STARTED)).startswith(_NEVER_STARTED):
            raise OSError(f"{self.engine.kind} could not start the container: {_last_line(req.log_path)}")
        if str(state.get("Status", "")).lower() not in ("exited", "stopped"):
            self._stop(ws.container)  # the attached client died while the container ran
            raise OSError(f"lost the attached {self.engine.kind} client while the container ran")
        exit_code = int(state.get("ExitCode", 0))  # type: ignore[arg-type]
        outcome.exit_code, outcome.signal = exit_code, None
        outcome.timed_out = timed_out.is_set()
        outcome.stopped = req.groups.stopping and not outcome.timed_out and exit_code != 0
        peak, cpu = cgroups.figures(cgroup) if self.engine.kind == "podman" else (None, None)
        outcome.max_rss_bytes, outcome.cpu_s = peak, (cpu if cpu is not None else 0.0)
        limit = req.template.memory_limit
        outcome.oom_killed = bool(state.get("OOMKilled")) or (
            exit_code == 137 and not outcome.timed_out and not outcome.stopped and bool(limit) and peak is not None
            and peak >= OOM_PEAK_FRACTION * float(limit or 0))
        outcome.evicted = _over_size_limit(ws, req.template)
        cgroups.remove(cgroup)
        return outcome

    def _state(self, container: str) -> dict[str, object]:
        try:
            proc = self.engine.run("inspect", "--format", "{{json .State}}", container, check=False)
            return json.loads(proc.stdout) if proc.returncode == 0 else {}
        except (ContainerEngineError, ValueError):
            return {}

    def _stop(self, container: str) -> None:
        try:
            self.engine.run("stop", "--time", str(int(KILL_GRACE_S)), container, check=False, timeout=60)
        except ContainerEngineError:
            pass  # the container is removed with its workspace, or pruned by the next launcher

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        if running:
            try:
                self.engine.run("rm", "--force", *running, check=False)
            except ContainerEngineError:
                pass
        cgroups.remove(f"/kai-flows/{self.instance}")


def _over_size_limit(ws: ContainerWorkspace, t: Template) -> str:
    """The kubelet's eviction message when an emptyDir holds more than its sizeLimit, else ""."""
    from kai_flows.engine.load import parse_quantity

    for vol in t.pod.volumes:
        if not vol.size_limit or not (ws.volumes / vol.name).is_dir():
            continue
        limit = parse_quantity(vol.size_limit, f"volume {vol.name!r} emptyDir.sizeLimit")
        used = sum(p.lstat().st_size for p in (ws.volumes / vol.name).rglob("*") if not p.is_dir())
        if used > limit:
            return f'Usage of EmptyDir volume "{vol.name}" exceeds the limit "{vol.size_limit}". '
    return ""


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


