"""What an MLflow error means (the one classification): real MLflow exceptions, no server."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider._compat import UnsupportedVersionError
from airflow_mlops_provider.hooks.mlflow import MlflowHook


def _rest(code: str):
    from mlflow.exceptions import RestException

    return RestException({"error_code": code, "message": f"{code} from the server"})


def _mlflow(message: str, code: str | None = None):
    from mlflow.exceptions import MlflowException

    return MlflowException(message) if code is None else MlflowException(message, error_code=_code(code))


def _html(status: int):
    """What MLflow's verify_rest_response raises for a non-JSON error page (real MLflow code)."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import verify_rest_response

    response = requests.Response()
    response.status_code = status
    response._content = f"<html><body>{status}</body></html>".encode()
    try:
        verify_rest_response(response, "/api/2.0/mlflow/model-versions/search")
    except MlflowException as err:
        return err
    raise AssertionError("verify_rest_response accepted an error page")


def _code(name: str) -> int:
    from mlflow.protos.databricks_pb2 import ErrorCode

    return ErrorCode.Value(name)


def _wrapped(cause: BaseException):
    """What MLflow's http_request raises: a new MlflowException while handling ``cause``."""
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise cause
        except Exception as e:
            raise MlflowException(f"API request failed with exception {e}")  # noqa: B904 (as MLflow does)
    except MlflowException as err:
        return err


def _requests_error(name: str):
    import requests.exceptions as rex

    return getattr(rex, name)("boom")


# (build the error, not found, already exists, transient)
CASES = [
    (lambda: _rest("RESOURCE_DOES_NOT_EXIST"), True, False, False),
    (lambda: _rest("INVALID_PARAMETER_VALUE"), True, False, False),
    (lambda: _mlflow("alias missing", "NOT_FOUND"), True, False, False),
    (lambda: _rest("RESOURCE_ALREADY_EXISTS"), False, True, False),
    (lambda: _rest("PERMISSION_DENIED"), False, False, False),
    (lambda: _mlflow("failed with error code 403 != 200", "PERMISSION_DENIED"), False, False, False),
    (lambda: _rest("UNAUTHENTICATED"), False, False, False),
    (lambda: _rest("TEMPORARILY_UNAVAILABLE"), False, False, True),
    (lambda: _mlflow("failed with error code 503 != 200", "TEMPORARILY_UNAVAILABLE"), False, False, True),
    (lambda: _html(502), False, False, True),
    (lambda: _html(500), False, False, True),
    (lambda: _html(429), False, False, True),
    (lambda: _html(501), False, False, False),
    (lambda: _html(404), False, False, False),
    (lambda: _rest("REQUEST_LIMIT_EXCEEDED"), False, False, True),
    (lambda: _rest("INTERNAL_ERROR"), False, False, True),
    (lambda: _mlflow("Model Registry features are not supported"), False, False, False),
    (lambda: _wrapped(_requests_error("ConnectionError")), False, False, True),
    (lambda: _wrapped(_requests_error("ReadTimeout")), False, False, True),
    (lambda: _wrapped(_requests_error("RetryError")), False, False, True),
    (lambda: _wrapped(_requests_error("SSLError")), False, False, False),
    (lambda: _wrapped(ConnectionResetError(104, "Connection reset by peer")), False, False, True),
    (lambda: ConnectionRefusedError(111, "Connection refused"), False, False, True),
    (lambda: TimeoutError("timed out"), False, False, True),
    (lambda: AirflowFailException("bad connection"), False, False, False),
    (lambda: UnsupportedVersionError("mlflow 3.19"), False, False, False),
    (lambda: ValueError("bad"), False, False, False),
]
IDS = [
    "rest-resource-does-not-exist", "rest-invalid-parameter", "not-found", "rest-already-exists",
    "rest-permission-denied", "html-403", "rest-unauthenticated", "rest-temporarily-unavailable",
    "html-503", "html-502", "html-500", "html-429", "html-501", "html-404", "rest-429", "rest-internal-error", "plain-mlflow-error", "connection-error",
    "read-timeout", "retries-exhausted-on-5xx", "tls-failure", "connection-reset", "connection-refused",
    "timeout", "airflow-fail", "unsupported-version", "value-error",
]  # fmt: skip


@pytest.mark.parametrize(("make", "not_found", "exists", "transient"), CASES, ids=IDS)
def test_error_classification(make, not_found, exists, transient):
    err = make()
    assert MlflowHook.is_not_found(err) is not_found
    assert MlflowHook.is_already_exists(err) is exists
    assert MlflowHook.is_transient_error(err) is transient


def test_no_answer_from_a_real_request_is_transient(monkeypatch):
    """A request to a closed port, through MLflow's own client, is classified as transient."""
    import json

    from mlflow.exceptions import MlflowException

    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    conn = {"conn_type": "mlflow", "host": "127.0.0.1", "port": free_port(), "password": "tok-x"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEAD", json.dumps(conn))
    hook = MlflowHook(mlflow_conn_id="mlflow_dead")
    with pytest.raises(MlflowException) as err:
        hook.find_model_version("m", min_version=1)
    assert hook.is_transient_error(err.value)
    assert not hook.is_answer(err.value)
