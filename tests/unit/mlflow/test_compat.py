"""The MLflow private-API gates: both sides of each, the closed side forced by the installed version."""

from __future__ import annotations

import json
import os

import pytest

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import UnsupportedVersionError
from airflow_mlops_provider._compat.mlflow import REST_STORES_GATE, SINGLE_REQUEST_GATE
from airflow_mlops_provider.hooks.mlflow import MlflowHook

GATES = [REST_STORES_GATE, SINGLE_REQUEST_GATE]
GATE_IDS = ["rest-stores", "single-request"]


def _conn_env(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **fields}))


@pytest.fixture
def mlflow_3_19(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend mlflow 3.19.0 is installed: a version no gate was written for."""
    real = _compat.installed_version
    monkeypatch.setattr(_compat, "installed_version", lambda d: "3.19.0" if d == "mlflow" else real(d))


@pytest.mark.parametrize("gate", GATES, ids=GATE_IDS)
def test_gate_admits_the_floor_the_installed_and_3_18(gate):
    installed = _compat.installed_version("mlflow")
    for inside in ("3.1.0", installed, "3.18.0", "3.18.9"):
        assert gate.contains(inside), inside
    for outside in ("3.0.1", "3.19.0", "4.0.0", None):
        assert not gate.contains(outside), outside
    assert _compat.version_gate(gate)


def test_rest_stores_gate_open_binds_per_hook_stores(monkeypatch):
    _conn_env(monkeypatch, "mlflow_open", host="127.0.0.1", port=1, password="tok-open-1")
    client = MlflowHook(mlflow_conn_id="mlflow_open").get_conn()
    assert type(client._tracking_client).__name__ == "_TrackingClient"
    assert client._tracking_client.store.get_host_creds().token == "tok-open-1"
    assert type(client._get_registry_client()).__name__ == "_RegistryClient"


@pytest.mark.parametrize(
    "fields",
    [
        {"password": "tok-closed-2"},
        {"login": "alice", "password": "pw-3"},
        {"extra": {"insecure_skip_verify": True}},
    ],
    ids=["token", "basic-auth", "tls-setting"],
)
def test_rest_stores_gate_closed_refuses_credentials_instead_of_leaking(monkeypatch, mlflow_3_19, fields):
    _conn_env(monkeypatch, "mlflow_closed", host="127.0.0.1", port=1, **fields)
    with pytest.raises(UnsupportedVersionError) as err:
        MlflowHook(mlflow_conn_id="mlflow_closed").get_conn()
    assert str(err.value) == (
        f"{REST_STORES_GATE.what} is written for mlflow >=3.1.0,<3.19; installed: 3.19.0; MLflow's "
        "public client takes credentials only from environment variables or ~/.mlflow/credentials, "
        "which this provider never writes"
    )
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_rest_stores_gate_closed_without_credentials_takes_the_public_client(monkeypatch, mlflow_3_19):
    _conn_env(monkeypatch, "mlflow_anon", host="127.0.0.1", port=1)
    client = MlflowHook(mlflow_conn_id="mlflow_anon").get_conn()
    assert type(client._tracking_client).__name__ == "TrackingServiceClient"
    assert type(client._get_registry_client()).__name__ == "ModelRegistryClient"
    assert client.tracking_uri == "http://127.0.0.1:1"


def test_embedded_stores_need_no_gate(monkeypatch, mlflow_3_19, tmp_path):
    _conn_env(monkeypatch, "mlflow_sqlite", extra={"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"})
    hook = MlflowHook(mlflow_conn_id="mlflow_sqlite")
    assert hook.get_conn().search_registered_models(max_results=1) == []


def test_single_request_gate_closed_refuses_to_create_a_version(monkeypatch, mlflow_3_19):
    """Without a single-attempt POST a lost response could register a second version."""
    _conn_env(monkeypatch, "mlflow_anon", host="127.0.0.1", port=1)
    hook = MlflowHook(mlflow_conn_id="mlflow_anon")
    with pytest.raises(UnsupportedVersionError) as err:
        hook.create_model_version_once(name="m", source="s3://b/m")
    assert str(err.value) == (
        f"{SINGLE_REQUEST_GATE.what} is written for mlflow >=3.1.0,<3.19; installed: 3.19.0; "
        "no public fallback exists"
    )


@pytest.mark.parametrize("closed", [False, True], ids=["gate-open-single-request", "gate-closed-client"])
def test_test_connection_on_both_sides_of_the_single_request_gate(monkeypatch, request, closed):
    from tests.conftest import free_port

    if closed:
        request.getfixturevalue("mlflow_3_19")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the client's search, once
    _conn_env(monkeypatch, "mlflow_dead", host="127.0.0.1", port=free_port())
    hook = MlflowHook(mlflow_conn_id="mlflow_dead")
    ok, message = hook.test_connection()
    assert ok is False
    assert message.startswith("MLflow at http://127.0.0.1:")
    # Open: one request of its own, no client built. Closed: the public client's search.
    assert ("client" in hook.__dict__) is closed
