"""The step images: which exist, in what order they build, and how (`kai-flows images build|list`).

Each folder `images/<family>/Dockerfile` of a checkout is one image, `<registry>/kai/<family>:<tag>`, exactly as
`kai-flows compile` references it. A family's parent is the image its `ARG BASE=.../kai/<parent>:...` names (the
`base` image starts FROM the official Python image), so families that share libraries share the parent's layers;
the build order is the parents' topological order. The build context is the checkout's root: the images carry
the `kai_flows` package and `steps/` as the checkout has them.
"""

from __future__ import annotations

import graphlib
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kai_flows.compile import image_ref
from kai_flows.containers import ContainerEngine, ContainerEngineError

_PARENT = re.compile(r"^ARG\s+BASE=\S*/kai/([a-z0-9][-a-z0-9]*):\S+\s*$", re.MULTILINE)
EXCLUDED = {"python-standin"}  # the local stand-in for the official Python image, built by its own script


class ImageError(RuntimeError):
    """A request the image tooling cannot carry out; one line for the user."""


@dataclass(frozen=True)
class Family:
    name: str
    dockerfile: Path
    parent: str | None  # None: builds FROM the official Python image


def find_checkout(start: Path | None = None) -> Path:
    """The checkout whose images/ to build: `start` or its nearest parent holding images/base/Dockerfile."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "images" / "base" / "Dockerfile").is_file() and (d / "pyproject.toml").is_file():
            return d
    raise ImageError(f"no kai-flows checkout at or above {here} (images/base/Dockerfile): images are built from a "
                     "checkout of the repository, whose root is the build context (or pass --context)")


def families(checkout: Path) -> dict[str, Family]:
    """Every image family of the checkout, in build order (parents first)."""
    found: dict[str, Family] = {}
    for dockerfile in sorted((checkout / "images").glob("*/Dockerfile")):
        name = dockerfile.parent.name
        if name in EXCLUDED:
            continue
        m = _PARENT.search(dockerfile.read_text())
        found[name] = Family(name, dockerfile, m.group(1) if m else None)
    for f in found.values():
        if f.parent is not None and f.parent not in found:
            raise ImageError(f"{f.dockerfile}: ARG BASE names image family {f.parent!r}, which has no "
                             f"images/{f.parent}/Dockerfile")
    sorter = graphlib.TopologicalSorter({f.name: [f.parent] if f.parent else [] for f in found.values()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as e:
        raise ImageError(f"image families form a cycle through their ARG BASE: {e.args[1]}") from None
    return {n: found[n] for n in order}


def select(all_families: dict[str, Family], only: Iterable[str], exists: Callable[[str], bool],
           ref: Callable[[str], str]) -> list[Family]:
    """The families to build: all, or those named plus any ancestor whose image is not present yet."""
    only = list(only)
    if not only:
        return list(all_families.values())
    unknown = [n for n in only if n not in all_families]
    if unknown:
        raise ImageError(f"unknown image famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                         f"(known: {', '.join(all_families)})")
    wanted = set(only)
    for name in only:
        parent = all_families[name].parent
        while parent is not None:
            if parent not in wanted and not exists(ref(parent)):
                wanted.add(parent)
            parent = all_families[parent].parent
    return [f for f in all_families.values() if f.name in wanted]


def labels(checkout: Path, family: str) -> dict[str, str]:
    """OCI labels: where the image comes from and which revision of it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        revision = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        source = subprocess.run(["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--", "kai_flows", "steps",
                                "images", "pyproject.toml"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        revision, dirty, source = "", "", ""
    try:
        pkg_version = version("kai-flows")
    except PackageNotFoundError:
        pkg_version = "0+unknown"
    return {
        "org.opencontainers.image.title": f"kai/{family}",
        "org.opencontainers.image.source": _without_credentials(source) or "kai-flows",
        "org.opencontainers.image.revision": (revision or "unknown") + ("-dirty" if dirty.strip() else ""),
        "org.opencontainers.image.version": pkg_version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def _without_credentials(url: str) -> str:
    """A remote URL without its user:token part (CI remotes carry tokens; labels are pushed with the image)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    if not parts.scheme and "@" in url.split(":", 1)[0]:  # scp-like git@host:path
        return url.split("@", 1)[1]
    return url


def build_command(engine: ContainerEngine, checkout: Path, family: Family, registry: str, tag: str,
                  no_cache: bool = False) -> list[str]:
    args = ["build", *engine.build_args(), *(["--no-cache"] if no_cache else []), "-f", str(family.dockerfile),
            "-t", image_ref(family.name, registry, tag)]
    if family.parent is not None:
        args += ["--build-arg", f"BASE={image_ref(family.parent, registry, tag)}"]
    for k, v in labels(checkout, family.name).items():
        args += ["--label", f"{k}={v}"]
    return engine.command(*args, str(checkout))


@dataclass
class Built:
    family: str
    ref: str
    seconds: float
    size: int  # bytes, as the engine reports the image
    parent_size: int | None  # the layer below: the parent family's image, or the Python image for base


def image_size(engine: ContainerEngine, ref: str) -> int | None:
    info = engine.inspect_image(ref)
    return int(info.get("Size") or 0) if info else None  # type: ignore[arg-type]


def build(engine: ContainerEngine, checkout: Path, family: Family, registry: str, tag: str, log: Path,
          no_cache: bool = False) -> Built:
    """Build one family; the engine's output goes to `log` (its tail is in the error when it fails)."""
    argv = build_command(engine, checkout, family, registry, tag, no_cache)
    started = time.monotonic()
    with open(log, "ab") as f:
        f.write(("$ " + " ".join(argv) + "\n").encode())
        f.flush()
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise ImageError(f"building kai/{family.name} failed (exit {proc.returncode}); the last lines of {log}:\n"
                         + "\n".join(tail))
    ref = image_ref(family.name, registry, tag)
    parent = image_ref(family.parent, registry, tag) if family.parent else python_base(family.dockerfile)
    return Built(family.name, ref, seconds, image_size(engine, ref) or 0,
                 image_size(engine, parent) if parent else None)


def python_base(dockerfile: Path) -> str | None:
    """The image the base Dockerfile starts FROM, as the engine names it."""
    m = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    if not m:
        return None
    ref = m.group(1)
    return ref if "/" in ref.split(":")[0] else f"docker.io/library/{ref}"


def push(engine: ContainerEngine, ref: str) -> None:
    try:
        engine.run("push", ref, timeout=3600)
    except ContainerEngineError as e:
        raise ImageError(f"pushing {ref}: {e}") from None


def referenced_images(templates_dir: Path) -> dict[str, list[str]]:
    """Image -> the pipelines (WorkflowTemplates under `templates_dir`) whose container templates use it."""
    import yaml

    refs: dict[str, list[str]] = {}
    for path in sorted(templates_dir.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("kind") != "WorkflowTemplate":
            continue
        for t in (doc.get("spec") or {}).get("templates") or []:
            image = (t.get("container") or {}).get("image")
            if image:
                pipelines = refs.setdefault(image, [])
                if path.stem not in pipelines:
                    pipelines.append(path.stem)
    return refs
