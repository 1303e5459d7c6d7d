"""Tenants sharing one bucket: a job reads only its own tenant's uploads.

Every job belongs to a tenant (`default` unless named). The S3 keys its inputs name must lie under the tenant's
upload prefix, `uploads/<tenant>/`, or under a prefix the operator allows that tenant by name in
`$KAI_TENANT_INPUT_PREFIXES` (JSON: `{"acme": ["shared/calibration/"]}`). Anything else (another tenant's
uploads, another workflow's artifacts, the bucket's manifests) is refused by name, at submission (`SubmitRequest`)
and again by the coordinator before it starts a job. On a coordinator running jobs with the local engine, inputs and
outputs are folders on that host, and they must lie inside the tenant's folder `<tenants root>/<tenant>/`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_TENANT = "default"
PREFIXES_ENV = "KAI_TENANT_INPUT_PREFIXES"
_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label: also a path segment and a label value


class TenancyError(ValueError):
    """An input outside what the job's tenant may read, or a malformed tenant name."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise TenancyError(f"tenant {tenant!r} is not a valid name (1-63 lowercase letters, digits and hyphens, "
                           "starting and ending with a letter or digit)")
    return tenant


def upload_prefix(tenant: str) -> str:
    """Where a tenant's uploads live in the bucket."""
    return f"uploads/{check_tenant(tenant)}/"


def allowed_prefixes(tenant: str, extra: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The tenant's upload prefix, then what the operator allows it (`extra`, else $KAI_TENANT_INPUT_PREFIXES)."""
    if extra is None:
        extra = _extra_from_env()
    granted = [p if p.endswith("/") else p + "/" for p in extra.get(tenant, ())]
    return [upload_prefix(tenant), *granted]


def _extra_from_env() -> dict[str, list[str]]:
    raw = os.environ.get(PREFIXES_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise TenancyError(f"${PREFIXES_ENV} is not JSON: {e}") from None
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) and p.strip("/") for p in v) for v in value.values()):
        raise TenancyError(f"${PREFIXES_ENV} must map tenant names to lists of non-empty key prefixes")
    return value


def check_input_key(tenant: str, what: str, key: str, extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """`key` (already a well-formed bucket key) if the tenant may read it; TenancyError naming `what` otherwise."""
    prefixes = allowed_prefixes(tenant, extra)
    folder = key if key.endswith("/") else key + "/"
    if not any(folder.startswith(p) for p in prefixes):
        raise TenancyError(f"{what}: key {key!r} is outside what tenant {tenant!r} may read "
                           f"({', '.join(prefixes)}); a job reads only its own tenant's uploads")
    return key


def check_tenant_folder(tenant: str, what: str, folder: str | Path, tenants_root: Path) -> Path:
    """A local input or output folder (local-engine coordinator) inside `<tenants_root>/<tenant>/`, symlinks
    resolved (a link out of the tenant's folder is outside it)."""
    root = (Path(tenants_root) / check_tenant(tenant)).resolve()
    path = Path(folder).expanduser().resolve()
    if path != root and root not in path.parents:
        raise TenancyError(f"{what}: folder {str(folder)!r} is outside tenant {tenant!r}'s folder ({root}); a job "
                           "reads and writes only its own tenant's folder")
    return path
