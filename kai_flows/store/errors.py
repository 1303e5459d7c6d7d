"""Errors of the artifact store: each carries a one-line message naming the thing at fault."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every artifact-store error."""


class StoreConfigError(StoreError):
    """The S3 settings are incomplete or malformed."""


class StoreUnreachableError(StoreError):
    """The S3 endpoint does not answer (down, wrong host or port)."""


class StoreCredentialsError(StoreError):
    """The S3 endpoint refused the access key / secret key."""


class StoreKeyMissingError(StoreError):
    """No (published) object or artifact at the key."""


class StoreBucketMissingError(StoreError):
    """The bucket does not exist."""


class InvalidKeyError(StoreError, ValueError):
    """A key that the store will not use (empty, leading or trailing slash, ...)."""


class LocalPathError(StoreError):
    """A local path is missing, unreadable, or in the way."""


class StoreIntegrityError(StoreError):
    """A downloaded object does not match the artifact's manifest."""


class SeaweedStartError(StoreError):
    """The embedded SeaweedFS did not start."""


class StoreDirInUseError(SeaweedStartError):
    """Another embedded SeaweedFS holds the data directory's lock."""
