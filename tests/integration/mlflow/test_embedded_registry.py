"""The embedded default: a ``sqlite:`` tracking URI with no server (what the demo uses)."""

from __future__ import annotations

import json

import pytest

from airflow_mlops_provider.operators.mlflow import MlflowRegisterModelOperator
from tests.integration.mlflow.conftest import log_sklearn_model, make_context

pytestmark = pytest.mark.integration


def test_register_creates_the_model_and_is_idempotent_on_an_embedded_sqlite_registry(monkeypatch, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # local artifacts land here
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "extra": {"tracking_uri": uri}})
    )
    logged = log_sklearn_model(uri, experiment="embedded", metrics={"auc": 0.8})
    kwargs = dict(
        task_id="register", model_name="embedded_model", run_id=logged.run_id, artifact_path="model"
    )

    first = MlflowRegisterModelOperator(**kwargs).execute(make_context())
    again = MlflowRegisterModelOperator(**kwargs).execute(make_context(try_number=2))

    from mlflow import MlflowClient

    versions = MlflowClient(uri).search_model_versions("name = 'embedded_model'")
    assert first["version"] == again["version"] == "1"
    assert [str(v.version) for v in versions] == ["1"]
