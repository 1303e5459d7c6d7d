"""S3Config: where the artifacts live, from arguments or from the ``KAI_S3_*`` environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from minio.helpers import check_bucket_name
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kai_flows.store.errors import StoreConfigError

_ENV = {
    "endpoint": "KAI_S3_ENDPOINT",
    "access_key": "KAI_S3_ACCESS_KEY",
    "secret_key": "KAI_S3_SECRET_KEY",
    "bucket": "KAI_S3_BUCKET",
}


class S3Config(BaseModel):
    """Where the artifacts live. ``endpoint`` is ``host:port``; a ``http://``/``https://`` prefix sets ``secure``."""

    endpoint: str
    access_key: str
    secret_key: str = Field(repr=False)
    bucket: str
    secure: bool = False
    region: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_scheme(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("endpoint"), str):
            endpoint = data["endpoint"].strip()
            for scheme, secure in (("https://", True), ("http://", False)):
                if endpoint.lower().startswith(scheme):
                    data = {**data, "endpoint": endpoint[len(scheme) :].rstrip("/"), "secure": secure}
                    break
        return data

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError(f"endpoint {value!r} must be host[:port] (a http(s):// prefix is allowed)")
        return value

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        try:
            check_bucket_name(value, strict=True)
        except ValueError:
            raise ValueError(f"{value!r} is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, "
                             "dots and hyphens, starting and ending with a letter or digit)") from None
        return value

    @classmethod
    def checked(cls, **values: object) -> S3Config:
        """Construct from user input: a bad value raises StoreConfigError with one line naming the field."""
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise StoreConfigError(_one_line(err)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config | None:
        """Read ``KAI_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY/BUCKET`` (and optional ``KAI_S3_REGION``).

        Returns None when ``KAI_S3_ENDPOINT`` is unset; raises ``StoreConfigError`` naming what is missing
        when the endpoint is set but the rest is not.
        """
        env = os.environ if environ is None else environ
        if not env.get(_ENV["endpoint"]):
            return None
        missing = [var for var in _ENV.values() if not env.get(var)]
        if missing:
            raise StoreConfigError(f"{_ENV['endpoint']} is set but {', '.join(missing)} is not")
        values: dict[str, object] = {field: env[var] for field, var in _ENV.items()}
        if env.get("KAI_S3_REGION"):
            values["region"] = env["KAI_S3_REGION"]
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise StoreConfigError(f"bad S3 settings from the environment: {_one_line(err)}") from None

    def to_env(self) -> dict[str, str]:
        """The environment variables that ``from_env`` reads back into this config."""
        scheme = "https://" if self.secure else "http://"
        env = {
            _ENV["endpoint"]: scheme + self.endpoint,
            _ENV["access_key"]: self.access_key,
            _ENV["secret_key"]: self.secret_key,
            _ENV["bucket"]: self.bucket,
        }
        if self.region:
            env["KAI_S3_REGION"] = self.region
        return env


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    return f"S3 {field}: {first['msg'].removeprefix('Value error, ')}"
