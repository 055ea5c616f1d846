"""What an MLflow error means: the one place that reads ``error_code``.

:class:`~airflow_mlops_provider.hooks.mlflow.MlflowHook` exposes these as ``is_not_found``,
``is_already_exists``, ``is_model_missing`` and ``is_transient_error``; the operators, the
sensor and the trigger ask the hook, never the error code.
"""

from __future__ import annotations

import re

__all__ = [
    "ALREADY_EXISTS_CODES",
    "NOT_FOUND_CODES",
    "TRANSIENT_CODES",
    "TRANSIENT_HTTP_STATUSES",
    "error_code",
    "is_already_exists",
    "is_model_missing",
    "is_not_found",
    "is_timeout",
    "is_transient_error",
]

#: The registered model, version or alias does not exist (yet). MLflow's SQL store answers an
#: unknown alias with INVALID_PARAMETER_VALUE, its REST store with RESOURCE_DOES_NOT_EXIST.
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
#: Created meanwhile by someone else.
ALREADY_EXISTS_CODES = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})
#: The server is there but cannot answer now (HTTP 429, 503, 504 and their MLflow codes).
TRANSIENT_CODES = frozenset(
    {
        "TEMPORARILY_UNAVAILABLE",
        "SERVICE_UNDER_MAINTENANCE",
        "WORKSPACE_TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
    }
)
#: HTTP statuses worth retrying: timeout, too many requests, and 5xx except 501 (not implemented).
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: mlflow/utils/rest_utils.py ``verify_rest_response`` (3.1.0 to 3.18.0): a non-JSON error answer
#: becomes ``MlflowException("API request to endpoint ... failed with error code 502 != 200...")``
#: whose code is INTERNAL_ERROR for 500 and 502 alike, so the status is read from the message.
#: Since 3.18 MLflow's client returns a 5xx to ``verify_rest_response`` once its own retries are
#: spent (before, urllib3 raised ``RetryError``).
_HTTP_STATUS_IN_MESSAGE = re.compile(r"failed with error code (\d{3}) != \d{3}")
#: What creating a version of a registered model that does not exist answers.
_MODEL_MISSING_CODE = "RESOURCE_DOES_NOT_EXIST"


def error_code(err: BaseException) -> str | None:
    """The MLflow error code of ``err`` (e.g. ``"RESOURCE_DOES_NOT_EXIST"``), or None."""
    code = getattr(err, "error_code", None)
    return code if isinstance(code, str) else None


def is_not_found(err: BaseException) -> bool:
    """True when ``err`` says the model, version or alias does not exist."""
    return error_code(err) in NOT_FOUND_CODES


def is_already_exists(err: BaseException) -> bool:
    """True when ``err`` says the resource exists already."""
    return error_code(err) in ALREADY_EXISTS_CODES


def is_model_missing(err: BaseException) -> bool:
    """True when creating a version failed because the registered model does not exist."""
    return error_code(err) == _MODEL_MISSING_CODE


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from or during (MLflow wraps without ``from``)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transient_error(err: BaseException) -> bool:
    """
    True for an error worth retrying: no answer (connection refused or reset, timeout), HTTP
    429 or 5xx (MLflow's retries exhausted on them), or a "temporarily unavailable" code.

    A configuration error (bad token: 401/403, unknown host, TLS failure, bad request) is not.
    """
    import requests.exceptions as rex
    from mlflow.exceptions import MlflowException, RestException

    for cause in _chain(err):
        if isinstance(cause, rex.SSLError):
            return False
        if isinstance(cause, (rex.ConnectionError, rex.Timeout, rex.RetryError, rex.ChunkedEncodingError)):
            return True
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        if isinstance(cause, MlflowException):
            code = error_code(cause)
            if code in TRANSIENT_CODES:
                return True
            # A JSON error answer (RestException) with INTERNAL_ERROR is the server's 500.
            if isinstance(cause, RestException) and code == "INTERNAL_ERROR":
                return True
            status = _HTTP_STATUS_IN_MESSAGE.search(str(cause))
            if status and int(status.group(1)) in TRANSIENT_HTTP_STATUSES:
                return True
    return False


def is_timeout(err: BaseException) -> bool:
    """
    True when ``err`` is a request that was sent but not answered in time: the server may be
    working on it still, and commit it later. A connect timeout sent nothing, so is not one.

    With its retries spent, ``requests`` reports a read timeout as a ``ConnectionError`` around
    urllib3's ``MaxRetryError(reason=ReadTimeoutError)``; MLflow wraps that without ``from``.
    """
    import requests.exceptions as rex
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    for cause in _chain(err):
        if isinstance(cause, rex.ConnectTimeout):
            return False
        if isinstance(cause, (rex.ReadTimeout, ReadTimeoutError, TimeoutError)):
            return True
        reasons = [getattr(arg, "reason", None) for arg in cause.args if isinstance(arg, MaxRetryError)]
        if any(isinstance(reason, ReadTimeoutError) for reason in reasons):
            return True
    return False
