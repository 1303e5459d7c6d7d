"""The container engine on this machine (podman or docker), with the settings it needs to run at all.

Both `kai-flows images` (build, push, list) and the local engine's container runtime start containers through
`ContainerEngine`, so the settings below are applied in one place and never typed by the user:
- podman on hosts with hybrid cgroups: crun refuses them (`cgroups in hybrid mode not supported`), runc works;
- ulimits lower than podman's default 1048576, which sandboxes refuse (`error setting rlimit ... not permitted`);
- builds use the host network, so `apt-get`/`pip` reach the same package mirrors as the host, and (build time only,
  never baked into a layer) the host's CA bundle and pip configuration, so a pip mirror with a private CA works.
See shared/notes/containers.md for how each was found.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ULIMITS = ("--ulimit", "nofile=8192:8192", "--ulimit", "nproc=4096:4096")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_PIP_CONFIG_DIRS = (Path("/etc/xdg/pip"),)


class ContainerEngineError(RuntimeError):
    """No usable container engine, or it refused a command; the message is one line for the user."""


@dataclass(frozen=True)
class ContainerEngine:
    binary: str  # absolute path
    kind: str  # "podman" or "docker"

    @property
    def global_args(self) -> tuple[str, ...]:
        if self.kind == "podman" and _podman_needs_runc() and shutil.which("runc"):
            return ("--runtime", "runc")
        return ()

    def command(self, *args: str) -> list[str]:
        """The full argv of `<engine> [global settings] args...`."""
        return [self.binary, *self.global_args, *args]

    def run(self, *args: str, timeout: float | None = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ContainerEngineError(f"{self.kind} {args[0]} did not answer within {timeout:g} s") from None
        except OSError as e:
            raise ContainerEngineError(f"cannot run {self.binary}: {e.strerror or e}") from None
        if check and proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise ContainerEngineError(f"{self.kind} {args[0]} failed (exit {proc.returncode}): {last[0]}")
        return proc

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def inspect_image(self, ref: str) -> dict[str, object] | None:
        proc = self.run("image", "inspect", ref, check=False)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout or "[]")
        return data[0] if data else None

    def build_args(self) -> list[str]:
        """Options every `build` gets on this host (see the module docstring)."""
        args = ["--network", "host"]
        if self.kind == "podman":
            args += [*ULIMITS, "--pull=never"]
            # Build-time mounts are podman's; docker builds use the daemon's own network and certificates.
            # Mounts only: `--env` would be written into the image's configuration, and pushed with it.
            if HOST_CA_BUNDLE.is_file():
                args += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
            for d in HOST_PIP_CONFIG_DIRS:
                if d.is_dir():
                    args += ["-v", f"{d}:{d}:ro"]
            links = _pip_find_links()
            for link in links:
                args += ["-v", f"{link}:{link}:ro"]
            if links or HOST_CA_BUNDLE.is_file():
                args += ["-v", f"{_build_pip_conf(links)}:/etc/pip.conf:ro"]
        return args

    def run_args(self) -> list[str]:
        """Options every `run` gets on this host."""
        return list(ULIMITS) if self.kind == "podman" else []


def find_engine(name: str | None = None) -> ContainerEngine:
    """The named engine, else podman or docker from PATH (podman first: it needs no daemon)."""
    candidates = [name] if name else ["podman", "docker"]
    for kind in candidates:
        if kind not in ("podman", "docker"):
            raise ContainerEngineError(f"unknown container engine {kind!r} (use podman or docker)")
        path = shutil.which(kind)
        if path and (name or kind == "podman" or _docker_daemon_answers(path)):
            return ContainerEngine(path, kind)
    wanted = name or "podman or docker"
    silent = " (a docker CLI is there, but its daemon does not answer)" if not name and shutil.which("docker") else ""
    raise ContainerEngineError(f"no container engine: {wanted} is not on PATH{silent} (Debian: apt-get install podman "
                               "runc; or `make images`, which installs it)")


def _docker_daemon_answers(path: str) -> bool:
    """A docker CLI without a reachable daemon (common on CI machines) is no engine to pick by default."""
    try:
        return subprocess.run([path, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=1)
def _podman_needs_runc() -> bool:
    """crun cannot run on hosts with hybrid cgroups (v1 controllers plus a v2 mount), where runc can."""
    return Path("/sys/fs/cgroup/unified").is_dir() and Path("/sys/fs/cgroup/memory").is_dir()


def _build_pip_conf(links: list[str]) -> Path:
    """A pip configuration for builds (mounted at /etc/pip.conf): the host's CA bundle and local wheel folders."""
    lines = ["[global]"]
    if HOST_CA_BUNDLE.is_file():
        lines.append(f"cert = {HOST_CA_BUNDLE}")
    if links:
        lines.append("find-links = " + " ".join(links))
    path = Path(tempfile.gettempdir()) / f"kai-flows-build-pip-{os.getuid()}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _pip_find_links() -> list[str]:
    """Local wheel folders named by the host's pip configuration (PIP_FIND_LINKS), mounted into builds so the
    same wheels (e.g. the CPU build of torch) are found inside as outside."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    return [p for p in links if p.startswith("/") and Path(p).is_dir()]
