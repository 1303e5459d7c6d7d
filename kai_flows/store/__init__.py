"""The artifact store: S3 under Argo's keys (``s3``; the keys themselves are ``kai_flows.argo.names``) and the
embedded SeaweedFS serving it locally (``seaweed``)."""

from kai_flows.store.config import S3Config
from kai_flows.store.errors import (
    InvalidKeyError,
    LocalPathError,
    SeaweedStartError,
    StoreBucketMissingError,
    StoreConfigError,
    StoreCredentialsError,
    StoreDirInUseError,
    StoreError,
    StoreIntegrityError,
    StoreKeyMissingError,
    StoreUnreachableError,
)
from kai_flows.store.s3 import ArtifactStore
from kai_flows.store.seaweed import EmbeddedSeaweedFS

__all__ = [
    "ArtifactStore",
    "EmbeddedSeaweedFS",
    "InvalidKeyError",
    "LocalPathError",
    "S3Config",
    "SeaweedStartError",
    "StoreBucketMissingError",
    "StoreConfigError",
    "StoreCredentialsError",
    "StoreDirInUseError",
    "StoreError",
    "StoreIntegrityError",
    "StoreKeyMissingError",
    "StoreUnreachableError",
]
