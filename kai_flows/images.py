"""The step images: which exist, in what order they build, and how (`kai-flows images build|list`).

Each folder `images/<family>/Dockerfile` of a checkout is one image, `<registry>/kai/<family>:<tag>`, exactly as
`kai-flows compile` references it. A family's parent is the image its `ARG BASE=.../kai/<parent>:...` names (the
`base` image starts FROM the official Python image), so families that share libraries share the parent's layers;
the build order is the parents' topological order. The build context is the checkout's root: the images carry
the `kai_flows` package and `steps/` as the checkout has them.

A tag can be moved; a registry digest cannot. `images build --lock FILE` records what it built (each image's ID
and, with `--push`, the digest the registry answered), and `kai-flows compile|deploy --image-lock FILE` reference
every image as `<registry>/kai/<family>:<tag>@sha256:...`.
"""

from __future__ import annotations

import graphlib
import json
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kai_flows.compile import image_ref
from kai_flows.containers import ContainerEngine, ContainerEngineError
from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG

_PARENT = re.compile(r"^ARG\s+BASE=\S*/kai/([a-z0-9][-a-z0-9]*):\S+\s*$", re.MULTILINE)
EXCLUDED = {"python-standin"}  # the local stand-in for the official Python image, built by its own script
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
LOCK_VERSION = 1


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


def image_id(engine: ContainerEngine, ref: str) -> str:
    """The engine's ID of a local image (`sha256:...`): what was built, though no registry serves it by that name."""
    info = engine.inspect_image(ref) or {}
    raw = str(info.get("Id") or "")
    if not raw:
        raise ImageError(f"{engine.kind} reports no image ID for {ref}")
    return raw if raw.startswith("sha256:") else f"sha256:{raw}"


def push(engine: ContainerEngine, ref: str) -> str:
    """Push `ref`; returns the manifest digest the registry stored (what a pod pulls by `@sha256:...`)."""
    with tempfile.TemporaryDirectory(prefix="kai-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        # podman writes the pushed digest to a file; docker prints `<tag>: digest: sha256:... size: N`.
        extra = ["--digestfile", str(digest_file)] if engine.kind == "podman" else []
        try:
            proc = engine.run("push", *extra, ref, timeout=3600)
        except ContainerEngineError as e:
            raise ImageError(f"pushing {ref}: {e}") from None
        text = digest_file.read_text() if digest_file.is_file() else proc.stdout + proc.stderr
    found = DIGEST.findall(text)
    if not found:
        raise ImageError(f"pushed {ref}, but {engine.kind} reported no digest for it")
    return found[-1]


# ---------------------------------------------------------------------------------------------- image lock


@dataclass(frozen=True)
class LockedImage:
    image: str  # <registry>/kai/<family>:<tag>, as built
    id: str  # the engine's image ID
    digest: str | None = None  # the registry's manifest digest, once pushed


@dataclass
class ImageLock:
    """What `images build` built for one registry and tag, by family."""

    registry: str
    tag: str
    images: dict[str, LockedImage] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        """Family -> registry digest, for the images that were pushed (compile pins these)."""
        return {name: img.digest for name, img in self.images.items() if img.digest}

    def to_json(self) -> str:
        images = {name: {k: v for k, v in vars(img).items() if v is not None}
                  for name, img in sorted(self.images.items())}
        doc = {"version": LOCK_VERSION, "registry": self.registry, "tag": self.tag, "images": images}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def read_lock(path: Path) -> ImageLock:
    try:
        doc = json.loads(path.read_text())
        lock = ImageLock(str(doc["registry"]), str(doc["tag"]),
                         {name: LockedImage(**entry) for name, entry in doc["images"].items()})
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image lock (written by `kai-flows images build --lock FILE`)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{path}: not an image lock ({type(e).__name__}: {e})") from None
    for name, img in lock.images.items():
        if img.digest is not None and not DIGEST.fullmatch(img.digest):
            raise ImageError(f"{path}: kai/{name}: digest {img.digest!r} is not sha256:<64 hex digits>")
    return lock


def record_lock(path: Path, registry: str, tag: str, built: dict[str, LockedImage]) -> ImageLock:
    """Add what was just built to the lock at `path`: merged with the families built earlier for the same registry
    and tag (a partial `--only` build), replacing a lock of another registry or tag."""
    lock = ImageLock(registry, tag)
    if path.is_file():
        earlier = read_lock(path)
        if (earlier.registry, earlier.tag) == (registry, tag):
            lock.images.update(earlier.images)
    lock.images.update(built)
    path.write_text(lock.to_json())
    return lock


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


def resolve_images(registry: str | None, tag: str | None,
                   lock_path: Path | None) -> tuple[str, str, dict[str, str] | None]:
    """Registry, tag and digests to compile with: as given, else the image lock's, else the defaults (no digests).
    A lock built for another registry or tag pins none of the images named, so it is refused."""
    if lock_path is None:
        return registry or DEFAULT_REGISTRY, tag or DEFAULT_TAG, None
    lock = read_lock(lock_path)
    wanted = (registry or lock.registry, tag or lock.tag)
    if wanted != (lock.registry, lock.tag):
        raise ImageError(f"{lock_path} records images built for registry {lock.registry} tag {lock.tag}, not "
                         f"registry {wanted[0]} tag {wanted[1]}")
    return lock.registry, lock.tag, lock.digests()
