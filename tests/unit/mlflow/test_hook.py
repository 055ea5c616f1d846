"""MlflowHook: URI building, lazy connection reading, per-hook credentials (no server needed)."""

from __future__ import annotations

import json
import os

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.hooks.mlflow import MlflowHook


def _conn_env(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **fields}))


@pytest.mark.parametrize(
    ("fields", "tracking", "registry", "ui"),
    [
        ({"host": "mlflow.example.com", "port": 5000}, "http://mlflow.example.com:5000", None, None),
        ({"host": "mlflow.example.com", "schema": "https"}, "https://mlflow.example.com", None, None),
        ({"host": "https://ml.example.com/"}, "https://ml.example.com", None, None),
        (
            {"host": "ignored", "extra": {"tracking_uri": "sqlite:///tmp/m.db"}},
            "sqlite:///tmp/m.db",
            None,
            "",
        ),
        (
            {"host": "h", "port": 80, "extra": {"registry_uri": "sqlite:///r.db", "ui_url": "https://ui/"}},
            "http://h:80",
            "sqlite:///r.db",
            "https://ui",
        ),
    ],
    ids=["host-port", "https-schema", "host-with-scheme", "sqlite-extra", "registry-and-ui-extras"],
)
def test_uris_from_connection(monkeypatch, fields, tracking, registry, ui):
    _conn_env(monkeypatch, "mlflow_uris", **fields)
    hook = MlflowHook(mlflow_conn_id="mlflow_uris")
    assert hook.tracking_uri == tracking
    assert hook.registry_uri == (registry or tracking)
    assert hook.ui_url == (tracking if ui is None else ui)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "MLflow connection 'mlflow_bad' has neither a host nor a 'tracking_uri' extra"),
        (
            {"host": "h", "schema": "ftp"},
            "MLflow connection 'mlflow_bad': schema must be 'http' or 'https', got 'ftp'",
        ),
    ],
    ids=["no-host", "bad-schema"],
)
def test_bad_connection_fails_without_retry(monkeypatch, fields, message):
    _conn_env(monkeypatch, "mlflow_bad", **fields)
    with pytest.raises(AirflowFailException) as err:
        _ = MlflowHook(mlflow_conn_id="mlflow_bad").tracking_uri
    assert str(err.value) == message


def test_init_reads_no_connection():
    # The connection does not exist: constructing must still work (nothing is read until use).
    hook = MlflowHook(mlflow_conn_id="does_not_exist_anywhere")
    assert hook.mlflow_conn_id == "does_not_exist_anywhere"
    assert "_settings" not in hook.__dict__
    assert "client" not in hook.__dict__


def test_hook_metadata():
    assert MlflowHook.conn_type == "mlflow"
    assert MlflowHook.default_conn_name == "mlflow_default"
    assert MlflowHook.conn_name_attr == "mlflow_conn_id"
    assert MlflowHook.hook_name == "MLflow"


def test_tokens_stay_per_hook_and_out_of_environ(monkeypatch):
    _conn_env(monkeypatch, "mlflow_a", host="127.0.0.1", port=1, password="token-aaa-111")
    _conn_env(monkeypatch, "mlflow_b", host="127.0.0.1", port=1, password="token-bbb-222")
    a, b = MlflowHook(mlflow_conn_id="mlflow_a"), MlflowHook(mlflow_conn_id="mlflow_b")
    store_a = a.get_conn()._tracking_client.store
    store_b = b.get_conn()._tracking_client.store
    reg_a = a.get_conn()._get_registry_client().store
    assert store_a.get_host_creds().token == "token-aaa-111"
    assert reg_a.get_host_creds().token == "token-aaa-111"
    assert store_b.get_host_creds().token == "token-bbb-222"
    assert not any("token-" in v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_"))
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


def test_login_switches_to_basic_auth_and_tls_flag(monkeypatch):
    _conn_env(
        monkeypatch,
        "mlflow_basic",
        host="127.0.0.1",
        port=1,
        login="alice",
        password="pw-basic-333",
        extra={"insecure_skip_verify": "true"},
    )
    creds = MlflowHook(mlflow_conn_id="mlflow_basic").get_conn()._tracking_client.store.get_host_creds()
    assert (creds.username, creds.password, creds.token) == ("alice", "pw-basic-333", None)
    assert creds.ignore_tls_verification is True


def test_token_is_masked(monkeypatch):
    from airflow.sdk._shared.secrets_masker import redact

    _conn_env(monkeypatch, "mlflow_mask", host="127.0.0.1", port=1, password="tok-mask-4444-zz")
    hook = MlflowHook(mlflow_conn_id="mlflow_mask")
    assert hook.tracking_uri == "http://127.0.0.1:1"
    assert "tok-mask-4444-zz" not in str(redact("Bearer tok-mask-4444-zz"))


def test_test_connection_reports_unreachable_server_quickly(monkeypatch):
    from tests.conftest import free_port

    _conn_env(monkeypatch, "mlflow_dead", host="127.0.0.1", port=free_port(), password="tok-dead-5555")
    ok, message = MlflowHook(mlflow_conn_id="mlflow_dead").test_connection()
    assert ok is False
    assert message.startswith("MLflow at http://127.0.0.1:")
    assert "tok-dead-5555" not in message
