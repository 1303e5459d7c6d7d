"""S3Config: environment, endpoint forms, bucket names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kai_flows.store import S3Config, StoreConfigError

FULL = {
    "KAI_S3_ENDPOINT": "http://127.0.0.1:9000",
    "KAI_S3_ACCESS_KEY": "ak",
    "KAI_S3_SECRET_KEY": "sk",
    "KAI_S3_BUCKET": "kai-artifacts",
}


def test_from_env_none_when_unset() -> None:
    assert S3Config.from_env({}) is None


def test_from_env_reads_all_four() -> None:
    config = S3Config.from_env(FULL)
    assert config is not None
    assert (config.endpoint, config.access_key, config.secret_key, config.bucket, config.secure) == (
        "127.0.0.1:9000",
        "ak",
        "sk",
        "kai-artifacts",
        False,
    )


def test_from_env_names_what_is_missing() -> None:
    env = {k: v for k, v in FULL.items() if k != "KAI_S3_SECRET_KEY"}
    with pytest.raises(StoreConfigError, match="KAI_S3_SECRET_KEY"):
        S3Config.from_env(env)


def test_from_env_bad_bucket_is_one_line() -> None:
    with pytest.raises(StoreConfigError, match="bucket") as info:
        S3Config.from_env({**FULL, "KAI_S3_BUCKET": "No_Such_Bucket!"})
    assert "\n" not in str(info.value)


def test_https_endpoint_sets_secure_and_env_round_trips() -> None:
    config = S3Config(endpoint="https://s3.example.com/", access_key="a", secret_key="s", bucket="bkt", region="eu-1")
    assert (config.endpoint, config.secure) == ("s3.example.com", True)
    assert S3Config.from_env(config.to_env()) == config


def test_secret_not_in_repr() -> None:
    config = S3Config(endpoint="h:1", access_key="a", secret_key="hunter2", bucket="bkt")
    assert "hunter2" not in repr(config)


def test_endpoint_with_path_is_refused() -> None:
    with pytest.raises(ValidationError, match="host"):
        S3Config(endpoint="http://h:1/bucket", access_key="a", secret_key="s", bucket="bkt")
