"""Where the data kai-flows ships lives: the compiled WorkflowTemplates, the ledger's migrations, the Argo schema
and the step images' Dockerfiles are package data (pyproject.toml maps the repository's top-level folders into
kai_flows.*), read through importlib.resources, so a wheel finds them where a checkout does.

Each can be moved by an environment variable (an operator's own compiled templates, say).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _package_dir(package: str) -> Path:
    # Installed wheels and editable installs are plain folders, so the Traversable is a real path.
    return Path(str(resources.files(package)))


def templates_dir() -> Path:
    """`$KAI_TEMPLATES_DIR`, else the WorkflowTemplates this version of kai-flows compiled (workflow_templates/)."""
    return Path(os.environ.get("KAI_TEMPLATES_DIR") or _package_dir("kai_flows.workflow_templates"))


def migrations_dir() -> Path:
    """`$KAI_MIGRATIONS_DIR`, else the ledger migrations shipped with kai-flows (migrations/)."""
    return Path(os.environ.get("KAI_MIGRATIONS_DIR") or _package_dir("kai_flows.migrations"))


def schemas_dir() -> Path:
    return _package_dir("kai_flows.schemas")


def dockerfiles_dir() -> Path:
    """The image families' Dockerfiles (images/<family>/Dockerfile), which lint checks an image against."""
    return _package_dir("kai_flows.dockerfiles")
