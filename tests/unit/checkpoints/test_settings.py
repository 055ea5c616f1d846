"""The shared checkpoint arguments: parse-time checks, resolution at execute, where a checkpoint lives."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.checkpoints.settings import (
    CheckpointOptions,
    CheckpointSettings,
    task_prefix,
    trial_prefix,
)
from airflow_mlops_provider.exceptions import CheckpointConfigError


@pytest.fixture(autouse=True)
def _no_mlops_config(monkeypatch):
    for option in ("URI", "INTERVAL", "MAX_BYTES", "CONN_ID", "ENDPOINT_URL"):
        monkeypatch.delenv(f"AIRFLOW__MLOPS__CHECKPOINT_{option}", raising=False)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"checkpoint": "gs://bucket/prefix"}, "'gs://bucket/prefix'"),
        ({"checkpoint": "relative/dir"}, "'relative/dir'"),
        ({"checkpoint": "s3://"}, "'s3://'"),
        ({"checkpoint": 42}, "42"),
        ({"checkpoint_interval": 0}, "0"),
        ({"checkpoint_interval": "soon"}, "'soon'"),
        ({"checkpoint_interval": float("nan")}, "nan"),
        ({"checkpoint_retention": "forever"}, "'forever'"),
        ({"checkpoint_max_bytes": "ten gigs"}, "'ten gigs'"),
        ({"checkpoint_max_bytes": -1}, "-1"),
        ({"checkpoint_conn_id": ""}, "''"),
    ],
)
def test_bad_static_arguments_are_value_errors_naming_the_value(kwargs, named):
    with pytest.raises(ValueError) as info:
        CheckpointOptions.from_args(**kwargs)
    message = str(info.value)
    assert named in message
    assert next(iter(kwargs)) in message


def test_templates_and_off_values_pass_at_parse_time():
    assert CheckpointOptions.from_args(checkpoint="{{ params.ckpt }}").checkpoint == "{{ params.ckpt }}"
    assert CheckpointOptions.from_args(checkpoint="").resolve() is None
    assert CheckpointOptions.from_args(checkpoint=False).resolve() is None
    options = CheckpointOptions.from_args(checkpoint_max_bytes="2Gi", checkpoint_interval="5")
    assert (options.max_bytes, options.interval) == (2 * 1024**3, 5.0)


def test_resolve_after_rendering_is_a_config_error_without_retries():
    options = CheckpointOptions.from_args(checkpoint="{{ params.ckpt }}")
    with pytest.raises(CheckpointConfigError) as info:
        options.resolve("ftp://host/dir")
    assert isinstance(info.value, AirflowFailException)
    assert "'ftp://host/dir'" in str(info.value)
    settings = options.resolve("s3://ckpt/team-a")
    assert settings == CheckpointSettings(uri="s3://ckpt/team-a")
    assert settings.scheme == "s3"


def test_config_defaults_fill_what_the_operator_leaves_unset(monkeypatch, tmp_path):
    assert CheckpointOptions.from_args().resolve() is None  # no [mlops] checkpoint_uri: off
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_URI", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_INTERVAL", "7.5")
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_MAX_BYTES", "1Gi")
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = CheckpointOptions.from_args().resolve()
    assert settings is not None
    assert (settings.uri, settings.interval, settings.max_bytes, settings.retention) == (
        str(tmp_path),
        7.5,
        1024**3,
        "keep",
    )
    assert settings.scheme == "file"
    # The operator's own values win over the configuration.
    ours = CheckpointOptions.from_args(
        checkpoint_interval=2, checkpoint_retention="delete_on_success"
    ).resolve()
    assert (ours.interval, ours.retention) == (2.0, "delete_on_success")
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_INTERVAL", "-3")
    with pytest.raises(CheckpointConfigError, match=r"\[mlops\] checkpoint_interval.*'-3'"):
        CheckpointOptions.from_args().resolve()
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_URI", "gs://nope")
    with pytest.raises(CheckpointConfigError, match=r"\[mlops\] checkpoint_uri.*'gs://nope'"):
        CheckpointOptions.from_args(checkpoint_interval=1).resolve()


def test_client_kwargs_come_from_a_real_airflow_aws_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CKPT_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAEXAMPLEKEY",
                "password": "s3cr3t-value",
                "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
            }
        ),
    )
    settings = CheckpointSettings(uri="s3://b/p", conn_id="ckpt_s3", endpoint_url="http://ignored:1")
    assert settings.client_kwargs() == {
        "aws_access_key_id": "AKIAEXAMPLEKEY",
        "aws_secret_access_key": "s3cr3t-value",
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:9000",
    }
    # Without a connection only the configured endpoint is set; boto3 finds credentials itself.
    assert CheckpointSettings(uri="s3://b/p", endpoint_url="http://e:1").client_kwargs() == {
        "endpoint_url": "http://e:1"
    }
    # The settings' repr (what a log or a rendered field could show) holds no secret.
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(CheckpointConfigError, match="'no_such_conn'"):
        CheckpointSettings(uri="s3://b/p", conn_id="no_such_conn").client_kwargs()


def test_where_a_checkpoint_lives_is_documented_and_try_independent():
    identity = {
        "dag_id": "train",
        "run_id": "manual__2026-12-02T10:00:00+00:00",
        "task_id": "fit",
        "map_index": "3",
        "try_number": "2",
    }
    assert task_prefix(identity) == "train/manual__2026-12-02T10%3A00%3A00%2B00%3A00/fit/3"
    assert task_prefix({**identity, "try_number": "5"}) == task_prefix(identity)
    assert trial_prefix("sweep", "r/1", "t-0007") == "sweep/r%2F1/trials/t-0007"
    settings = CheckpointSettings(uri="s3://ckpt/root/")
    assert settings.location("a/b") == "s3://ckpt/root/a/b"
