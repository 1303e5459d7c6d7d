"""Publishing step outputs whole or not at all, and what the published files are (sha256)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a sibling staging folder that becomes ``out`` only when the block succeeds (no half-written output)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"output {out} already exists; a step never overwrites an output")
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    """The file's sha256 in hex, read in 1 MiB blocks (delivered models run to hundreds of MB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
