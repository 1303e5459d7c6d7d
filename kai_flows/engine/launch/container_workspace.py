"""One container attempt's files on this machine: its emptyDir folders, its inputs, and its outputs read back.

A step runs as another user in its own filesystem and may leave symlinks anywhere in what it writes; the engine
runs with more rights than the step. So an output is read only when its real path, every symlink resolved, stays
inside the volume folder (or the copy) it came from: a link to `/proc/self` or `/` never makes the engine publish
one of its own files.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from kai_flows.containers import ContainerEngine, ContainerEngineError
from kai_flows.engine.model import ArtifactDecl, EngineError, OutputParam, Template
from kai_flows.engine.podspec import VolumeMount


class ContainerWorkspace:
    def __init__(self, engine: ContainerEngine, template: Template, scratch: Path, container: str) -> None:
        self.engine, self.template, self.scratch, self.container = engine, template, scratch, container
        self.inputs = scratch / "inputs" / "artifacts"
        self.volumes = scratch / "volumes"
        self.copied = scratch / "copied"
        for d in (self.inputs, self.volumes, self.copied):
            d.mkdir(parents=True)
        for m in template.pod.mounts:  # names and subPaths were checked (container_checks): no '..', no '/'
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
            root = self.volumes / m.name
            host = self.volume_dir(m).joinpath(*rel.parts)
            if not os.path.lexists(host):
                return None
            return _confined(host, root, step_path)
        # Not on a volume: the container's own filesystem, copied out as Argo's executor copies it.
        if not self.created:
            return None
        self._copies += 1
        dest = self.copied / str(self._copies)
        try:
            proc = self.engine.run("cp", f"{self.container}:{step_path}", str(dest), check=False, timeout=None)
        except ContainerEngineError as e:
            raise EngineError(f"output {step_path!r}: {e}") from None
        if proc.returncode != 0 or not os.path.lexists(dest):
            return None
        return _confined(dest, dest, step_path)

    def close(self) -> None:
        if self.created:
            try:
                self.engine.run("rm", "--force", "--volumes", self.container, check=False)
            except ContainerEngineError:
                pass  # pruned at the next start of a container launcher (its engine is gone by then)
            self.created = False


def _confined(host: Path, root: Path, step_path: str) -> Path:
    """`host` with every symlink resolved, when it and everything under it stay inside `root`; else an Error."""
    real_root = root.resolve()

    def inside(p: Path) -> bool:
        real = p.resolve()
        return real == real_root or real_root in real.parents

    if not inside(host):
        raise EngineError(f"output {step_path!r} leads outside the step's own files (through a symlink to "
                          f"{host.resolve()}); nothing was published")
    real = host.resolve()
    if real.is_dir():
        for p in real.rglob("*"):
            if p.is_symlink() and not inside(p):
                raise EngineError(f"output {step_path!r}: {p.relative_to(real)} is a symlink to "
                                  f"{os.readlink(p)!r}, outside the step's own files; nothing was published")
    return real
