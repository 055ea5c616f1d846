"""Registry writes whose answer is lost, against a real ``mlflow server`` behind the chaos suite's
fault proxy (operators in-process, the task retry called by hand). Found by scenario 2.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pytest

from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)
from tests.chaos.fault_proxy import FaultProxy
from tests.integration.mlflow.conftest import make_context, metric_run, mlflow_conn_json

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

TIMEOUT_S = 2


@pytest.fixture
def fault_proxy(monkeypatch, mlflow_server) -> Iterator[FaultProxy]:
    """``mlflow_default`` through a FaultProxy; MLflow's client: 2 s timeout, no retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with FaultProxy(mlflow_server.port) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_conn_json(proxy.url))
        yield proxy


def _model(server, *, champion_score: float | None = None) -> tuple[str, str]:
    """A registered model (version 1 holding ``champion`` when a score is given), and a run."""
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    name = f"faults-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    if champion_score is not None:
        seed = metric_run(server.url, experiment="faults", metrics={"auc": champion_score})
        client.create_model_version(name, f"runs:/{seed}/model", seed)
        client.set_registered_model_alias(name, "champion", "1")
    return name, metric_run(server.url, experiment="faults", metrics={"auc": 0.9})


def _events(ctx) -> list[dict]:
    from airflow.sdk import AssetAlias

    from airflow_mlops_provider.assets.mlflow import MLFLOW_MODEL_EVENTS_ALIAS

    return [e.extra for e in ctx["outlet_events"][AssetAlias(MLFLOW_MODEL_EVENTS_ALIAS)].asset_alias_events]


def test_a_create_held_past_the_timeout_commits_once(fault_proxy, mlflow_server):
    """The proxy holds the create 1.5 timeouts, then forwards it: one version, not two."""
    from mlflow import MlflowClient

    name, run_id = _model(mlflow_server)
    fault_proxy.inject("delay", method="POST", path="model-versions/create", body=name, delay=TIMEOUT_S * 1.5)
    op = MlflowRegisterModelOperator(
        task_id="register", model_name=name, run_id=run_id, artifact_path="model"
    )
    result = op.execute(make_context())
    time.sleep(TIMEOUT_S * 1.5)  # nothing held is left to commit
    versions = MlflowClient(mlflow_server.url).search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == [result["version"]] == ["1"]
    creates = [e for e in fault_proxy.log if e[0] == "POST" and "model-versions/create" in e[1]]
    assert creates == [("POST", "/api/2.0/mlflow/model-versions/create", "delay")]


@pytest.mark.parametrize("fault", ["drop", "reset"])
def test_a_promotion_whose_answer_was_lost_is_reported_by_the_retry(fault_proxy, mlflow_server, fault):
    from mlflow import MlflowClient

    from airflow_mlops_provider.hooks.mlflow import MlflowHook

    name, run_id = _model(mlflow_server, champion_score=0.8)
    version = MlflowHook().get_conn().create_model_version(name, f"runs:/{run_id}/model", run_id).version
    fault_proxy.inject(fault, method="POST", path="registered-models/alias", body=(name, '"champion"'))
    op = MlflowPromoteModelOperator(
        task_id="promote", model_name=name, challenger_version=version, metric="auc"
    )
    with pytest.raises(Exception, match="registered-models/alias"):
        op.execute(make_context(task_id="promote"))
    retry = make_context(task_id="promote", try_number=2)
    result = op.execute(retry)
    assert (result["decision"], result["champion_version"], result["champion_value"]) == ("promote", "1", 0.8)
    assert [(e["version"], e["previous_version"]) for e in _events(retry)] == [(version, "1")]
    tags = MlflowClient(mlflow_server.url).get_model_version(name, version).tags
    assert (tags["airflow.promotion.decision"], tags["airflow.promotion.champion_version"]) == (
        "promote",
        "1",
    )


def test_an_alias_move_whose_answer_was_lost_is_reported_by_the_retry(fault_proxy, mlflow_server):
    from airflow_mlops_provider.hooks.mlflow import MlflowHook

    name, run_id = _model(mlflow_server, champion_score=0.8)
    MlflowHook().get_conn().create_model_version(name, f"runs:/{run_id}/model", run_id)
    fault_proxy.inject("drop", method="POST", path="registered-models/alias", body=(name, '"champion"'))
    op = MlflowSetAliasOperator(task_id="alias", model_name=name, alias="champion", version="2")
    with pytest.raises(Exception, match="registered-models/alias"):
        op.execute(make_context(task_id="alias"))
    retry = make_context(task_id="alias", try_number=2)
    assert op.execute(retry)["previous_version"] == "1"
    assert [(e["version"], e["previous_version"]) for e in _events(retry)] == [("2", "1")]
