"""Both sides of each MLflow gate against the real server (the closed side forced by the version)."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import UnsupportedVersionError
from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.operators.mlflow import MlflowRegisterModelOperator
from tests.integration.mlflow.conftest import make_context, mlflow_conn_json

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_3_19(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _compat.installed_version
    monkeypatch.setattr(_compat, "installed_version", lambda d: "3.19.0" if d == "mlflow" else real(d))


def _versions(server, name: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(server.url).search_model_versions(f"name = '{name}'")


def test_rest_stores_gate_closed_anonymous_server_works_through_the_public_client(
    monkeypatch, mlflow_3_19, proxy
):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_ANON", mlflow_conn_json(proxy.url, token=None))
    hook = MlflowHook(mlflow_conn_id="mlflow_anon")
    assert hook.find_model_version(f"absent-{uuid.uuid4().hex[:6]}", min_version=1) is None
    assert hook.test_connection() == (True, f"Connected to MLflow at {proxy.url}")
    assert proxy.seen
    assert all("authorization" not in r.headers for r in proxy.seen)


def test_rest_stores_gate_closed_with_a_token_sends_nothing(monkeypatch, mlflow_3_19, proxy):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TOK", mlflow_conn_json(proxy.url, token="tok-gate-77"))
    hook = MlflowHook(mlflow_conn_id="mlflow_tok")
    with pytest.raises(UnsupportedVersionError, match=r"installed: 3\.19\.0"):
        hook.find_model_version("m", min_version=1)
    ok, message = hook.test_connection()  # the UI's check says why, and leaks nothing
    assert ok is False
    assert "installed: 3.19.0" in message
    assert "tok-gate-77" not in message
    assert proxy.seen == []


@pytest.mark.parametrize("closed", [False, True], ids=["gate-open", "gate-closed"])
def test_single_request_gate_register(monkeypatch, request, mlflow_server, sklearn_model, proxy, closed):
    """Open: the create is one POST. Closed: the task fails before anything is created."""
    if closed:
        request.getfixturevalue("mlflow_3_19")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_conn_json(proxy.url, token=None))
    from mlflow import MlflowClient

    name = f"gate-{uuid.uuid4().hex[:8]}"
    MlflowClient(mlflow_server.url).create_registered_model(name)
    op = MlflowRegisterModelOperator(task_id="register", model_name=name, source=sklearn_model.source)
    creates = lambda: [r for r in proxy.seen if "/model-versions/create" in r.path]  # noqa: E731
    if closed:
        with pytest.raises(UnsupportedVersionError, match="no public fallback exists"):
            op.execute(make_context())
        assert creates() == []
        assert _versions(mlflow_server, name) == []
    else:
        assert op.execute(make_context())["version"] == "1"
        assert len(creates()) == 1
        assert [v.version for v in _versions(mlflow_server, name)] == ["1"]
