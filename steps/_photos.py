"""Which files of an input folder are photos, and which names a fan-out can carry.

Photos are found in subfolders too (phone exports keep `DCIM/100APPLE/...`); hidden files and folders are not
photos. A photo's name travels to its own step as the loop item `{{item}}` of an Argo fan-out, and Argo prints a
string item JSON-escaped (`Item.String()` in pkg/apis/workflow/v1alpha1/item.go): a name with a double quote, a
backslash or a control character would reach `subPath` changed, and the step would look for a file that does not
exist. Such names are reported by name up front instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from kai_steps._imageio import IMAGE_SUFFIXES


def walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, in subfolders too, sorted by relative path."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def is_photo(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def fan_out_problem(name: str) -> str | None:
    """Why Argo could not hand `name` to a step unchanged as a loop item, or None when it can."""
    escaped = json.dumps(name, ensure_ascii=False)[1:-1]
    if escaped == name and "\u2028" not in name and "\u2029" not in name:
        return None
    if '"' in name:
        return "a double quote"
    if "\\" in name:
        return "a backslash"
    return "a control character (newline, tab, ...)"
