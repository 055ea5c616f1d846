"""Parse-time validation, metadata and pure logic of the MLflow registry classes (no server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.assets.mlflow import (
    MLFLOW_MODEL_EVENTS_ALIAS,
    mlflow_model_asset,
    mlflow_model_uri,
    model_name_from_uri,
)
from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
    compare_metrics,
    parse_min_delta,
)
from airflow_mlops_provider.sensors.mlflow import MlflowModelVersionSensor
from airflow_mlops_provider.triggers.mlflow import MlflowModelVersionTrigger


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give source, run_id with artifact_path, or model_id; got none of them"),
        ({"run_id": "abc"}, "run_id='abc' needs artifact_path (or give source or model_id)"),
        (
            {"source": "s3://b/m", "await_timeout": 0},
            "await_timeout must be a positive number of seconds, got 0",
        ),
        ({"source": "s3://b/m", "tags": ["a"]}, "tags must be a mapping, got ['a']"),
    ],
    ids=["no-source", "run-without-artifact-path", "zero-timeout", "tags-not-mapping"],
)
def test_register_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        MlflowRegisterModelOperator(task_id="r", model_name="m", **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "maximize"}, "mode must be 'max' or 'min', got 'maximize'"),
        ({"min_delta": -0.1}, "min_delta must be a number >= 0, got -0.1"),
        ({"min_delta": "0.1x"}, "min_delta must be a number >= 0, got '0.1x'"),
        ({"min_delta": float("nan")}, "min_delta must be a number >= 0, got nan"),
        ({"min_delta": True}, "min_delta must be a number >= 0, got True"),
    ],
    ids=["bad-mode", "negative-min-delta", "not-a-number-min-delta", "nan-min-delta", "bool-min-delta"],
)
def test_promote_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        MlflowPromoteModelOperator(
            task_id="p", model_name="m", challenger_version="1", metric="auc", **kwargs
        )
    assert str(err.value) == message


def test_promote_min_delta_is_templated():
    """A DAG param can set min_delta: kept as a template at parse time, checked after rendering."""
    op = MlflowPromoteModelOperator(
        task_id="p", model_name="m", challenger_version="1", metric="auc", min_delta="{{ params.min_delta }}"
    )
    assert "min_delta" in op.template_fields
    op.render_template_fields({"params": {"min_delta": 0.02}})
    assert parse_min_delta(op.min_delta) == 0.02
    # A rendered value that is not a number >= 0 fails the task before MLflow is contacted.
    op.min_delta = "-0.5"
    with pytest.raises(AirflowFailException, match=r"min_delta must be a number >= 0, got '-0.5'"):
        op.execute({})
    assert (
        MlflowPromoteModelOperator(
            task_id="q", model_name="m", challenger_version="1", metric="auc", min_delta="0.25"
        ).min_delta
        == 0.25
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give alias or min_version (or both); got neither"),
        ({"min_version": 0}, "min_version must be a positive model version, got 0"),
        ({"min_version": "two"}, "min_version must be a positive model version, got 'two'"),
    ],
    ids=["neither", "zero", "not-a-number"],
)
def test_sensor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        MlflowModelVersionSensor(task_id="s", model_name="m", **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("challenger", "champion", "mode", "min_delta", "expected"),
    [
        (0.7, None, "max", 0.0, (True, None)),
        (0.85, 0.8, "max", 0.01, (True, pytest.approx(0.05))),
        (0.75, 0.8, "max", 0.0, (False, pytest.approx(-0.05))),
        (0.805, 0.8, "max", 0.01, (False, pytest.approx(0.005))),
        (0.8, 0.8, "max", 0.0, (False, 0.0)),
        (0.805, 0.8, "max", 0.005, (False, pytest.approx(0.005))),
        (0.25, 0.3, "min", 0.01, (True, pytest.approx(0.05))),
        (0.35, 0.3, "min", 0.0, (False, pytest.approx(-0.05))),
        (0.295, 0.3, "min", 0.01, (False, pytest.approx(0.005))),
    ],
    ids=["no-champion", "better-max", "worse-max", "within-delta-max", "equal", "delta-equals-min-delta", "better-min", "worse-min",
         "within-delta-min"],
)  # fmt: skip
def test_compare_metrics(challenger, champion, mode, min_delta, expected):
    assert compare_metrics(challenger, champion, mode=mode, min_delta=min_delta) == expected


def test_templated_fields_and_links():
    assert MlflowRegisterModelOperator.template_fields == (
        "model_name", "source", "run_id", "artifact_path", "model_id", "tags", "description", "alias",
    )  # fmt: skip
    assert MlflowSetAliasOperator.template_fields == ("model_name", "alias", "version")
    assert "challenger_version" in MlflowPromoteModelOperator.template_fields
    assert MlflowModelVersionSensor.template_fields == ("model_name", "alias", "min_version")
    names = {link.name for link in MlflowRegisterModelOperator.operator_extra_links}
    assert names == {"MLflow run", "MLflow model version"}


def test_operators_add_the_model_events_alias_to_outlets():
    op = MlflowRegisterModelOperator(task_id="r", model_name="{{ params.m }}", source="s3://b/m")
    assert [o.name for o in op.outlets] == [MLFLOW_MODEL_EVENTS_ALIAS]
    off = MlflowSetAliasOperator(task_id="a", model_name="m", alias="x", version=1, emit_asset_event=False)
    assert off.outlets == []


def test_model_asset_uri_round_trip():
    assert mlflow_model_uri("team/churn model") == "mlflow-model://team%2Fchurn%20model"
    asset = mlflow_model_asset("team/churn model")
    assert model_name_from_uri(asset.uri) == "team/churn model"
    with pytest.raises(ValueError) as err:
        mlflow_model_uri("  ")
    assert str(err.value) == "model_name must be a non-empty string, got '  '"


def test_trigger_serialization_round_trip():
    trigger = MlflowModelVersionTrigger(
        mlflow_conn_id="c", model_name="m", alias="champion", min_version=3, poll_interval=2.5
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_mlops_provider.triggers.mlflow.MlflowModelVersionTrigger"
    json.dumps(kwargs)  # JSON-safe
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)


def test_sensor_deferrable_default_follows_airflow_config():
    probe = (
        "import os; os.environ['AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE']='true'\n"
        "from airflow_mlops_provider.sensors.mlflow import MlflowModelVersionSensor as S\n"
        "print(S(task_id='s', model_name='m', alias='a').deferrable)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
    assert MlflowModelVersionSensor(task_id="s", model_name="m", alias="a").deferrable is False


_PROBE = """
import sys
import airflow_mlops_provider.operators.mlflow, airflow_mlops_provider.sensors.mlflow
import airflow_mlops_provider.triggers.mlflow, airflow_mlops_provider.links.mlflow
import airflow_mlops_provider.hooks.mlflow, airflow_mlops_provider.assets.mlflow
print(sorted(m for m in ("mlflow", "sklearn", "pandas", "numpy") if m in sys.modules))
"""


def test_importing_dag_facing_modules_does_not_import_mlflow():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
