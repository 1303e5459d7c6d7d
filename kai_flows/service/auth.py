"""Bearer-token authentication of the coordinator API: no token, no access.

The token comes from a Secret (`kai-coordinator-api`, key `token`) through $KAI_API_TOKEN, or from a file
(`--token-file`). It is compared in constant time. Health probes (/healthz, /readyz) carry no job data and stay
open, as the kubelet calls them without credentials; /metrics is on its own port and carries no job data either.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

MIN_TOKEN_LENGTH = 16  # a short shared secret is guessable; `new_token` makes 43 characters


class TokenError(ValueError):
    """No usable API token was configured; the message says where one is expected."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def load_token(token_file: str | Path | None = None, env: str = "KAI_API_TOKEN") -> str:
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise TokenError(f"API token file {token_file}: cannot read it ({e.strerror})") from None
        source = f"API token file {token_file}"
    else:
        token = os.environ.get(env, "").strip()
        source = f"${env}"
        if not token:
            raise TokenError(f"no API token: set ${env} (in a cluster, from the Secret kai-coordinator-api) or pass "
                             "--token-file; the API serves nobody without one")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{source}: the API token must be at least {MIN_TOKEN_LENGTH} characters")
    return token


class BearerAuth:
    """A FastAPI dependency: 401 unless the request carries `Authorization: Bearer <the token>`."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def __call__(self, request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
