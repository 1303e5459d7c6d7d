"""Input artifacts for steps: each S3 key is downloaded once per run into a cache, then hard-linked (or copied
when links are impossible) into each step's scratch folder. A fan-out of N steps over one input folder with
`subPath: '{{item}}'` costs one download, not N, and `subPath` works on any published directory artifact.
Steps only read their inputs (the step API's `In[Path]`), so sharing inodes between scratch folders is safe.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path, PurePosixPath

from kai_flows.engine.model import EngineError


class ArtifactMissing(EngineError):
    """No published artifact at a key an input names."""


class InputCache:
    def __init__(self, store: object, root: Path) -> None:
        self.store = store
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def fetch(self, key: str) -> Path:
        """The local copy of the artifact at `key` (downloaded on first use)."""
        from kai_flows.store.errors import StoreKeyMissingError
        from kai_flows.store.manifest import check_key

        local = self.root / check_key(key)  # a relative key: never a path outside the cache
        with self._lock(key):
            if not local.exists():
                try:
                    self.store.download(key, local)  # type: ignore[attr-defined]
                except StoreKeyMissingError:
                    raise ArtifactMissing(f"no artifact published at key {key!r}") from None
        return local

    def materialise(self, key: str, sub_path: str | None, dest: Path) -> None:
        """Place the artifact (or its `subPath`) at `dest`."""
        source = self.fetch(key)
        if sub_path:
            rel = PurePosixPath(sub_path.strip("/"))
            if rel.is_absolute() or ".." in rel.parts:
                raise EngineError(f"subPath {sub_path!r} must stay inside artifact {key!r}")
            source = source.joinpath(*rel.parts)
            if not source.exists():
                raise ArtifactMissing(f"artifact {key!r} has no subPath {sub_path!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, dest)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
