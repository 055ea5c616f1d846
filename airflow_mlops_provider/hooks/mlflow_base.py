"""MlflowBaseHook: the connection, the lazily built ``MlflowClient`` and what MLflow errors mean.

The tracking URI comes from the connection's host, port and schema (``http``/``https``), or from
the ``tracking_uri`` extra (``sqlite:///...``, ``file:///...`` or a full ``http(s)://`` URL).

The connection password is a token (sent as ``Authorization: Bearer``), or, when the login is
set, the password of HTTP basic authentication. It is masked as soon as it is read, never
logged, and never written into ``os.environ``: the hook gives its own client REST stores that
carry the credentials (:func:`airflow_mlops_provider._compat.mlflow.client_with_credentials`),
so two hooks with different tokens in one process never share them.

Registry access (versions, aliases, metrics) is :class:`~airflow_mlops_provider.hooks.mlflow.
MlflowHook`, built on this class.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from airflow_mlops_provider._compat import mlflow as compat
from airflow_mlops_provider.hooks import mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

_HTTP_SCHEMES = ("http", "https")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class MlflowBaseHook(BaseHook):
    """
    Connection settings and the ``MlflowClient`` of an Airflow connection of type ``mlflow``.

    The connection is read, and the client built, on first use (never in ``__init__``).

    :param mlflow_conn_id: The Airflow connection of type ``mlflow``.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """Everything the client needs, read once from the connection."""
        conn = self.get_connection(self.mlflow_conn_id)
        extra = conn.extra_dejson or {}
        secret = conn.password or None
        if secret:
            mask_secret(secret)
        tracking_uri = (extra.get("tracking_uri") or "").strip()
        if not tracking_uri:
            host = (conn.host or "").strip()
            if not host:
                raise AirflowFailException(
                    f"MLflow connection {self.mlflow_conn_id!r} has neither a host nor a 'tracking_uri' extra"
                )
            if "://" in host:
                tracking_uri = host.rstrip("/")
            else:
                scheme = (conn.schema or "http").strip().lower()
                if scheme not in _HTTP_SCHEMES:
                    raise AirflowFailException(
                        f"MLflow connection {self.mlflow_conn_id!r}: schema must be 'http' or "
                        f"'https', got {conn.schema!r}"
                    )
                tracking_uri = f"{scheme}://{host.rstrip('/')}"
                if conn.port:
                    tracking_uri += f":{conn.port}"
        registry_uri = (extra.get("registry_uri") or "").strip() or tracking_uri
        ui_url = (extra.get("ui_url") or "").strip()
        if not ui_url and compat.is_http(tracking_uri):
            ui_url = tracking_uri
        return {
            "tracking_uri": tracking_uri,
            "registry_uri": registry_uri,
            "login": conn.login or None,
            "secret": secret,
            "insecure": _as_bool(extra.get("insecure_skip_verify", False)),
            "ui_url": ui_url.rstrip("/"),
        }

    @property
    def tracking_uri(self) -> str:
        """The tracking URI the client talks to."""
        return self._settings["tracking_uri"]

    @property
    def registry_uri(self) -> str:
        """The model registry URI (the tracking URI unless the ``registry_uri`` extra is set)."""
        return self._settings["registry_uri"]

    @property
    def ui_url(self) -> str:
        """Base URL of the MLflow UI ("" when there is none, e.g. for ``sqlite:`` stores)."""
        return self._settings["ui_url"]

    @property
    def registry_is_http(self) -> bool:
        """True when the registry is a tracking server reached over HTTP(S)."""
        return compat.is_http(self.registry_uri)

    @property
    def _credentials(self) -> dict[str, Any]:
        settings = self._settings
        return {"login": settings["login"], "secret": settings["secret"], "insecure": settings["insecure"]}

    @cached_property
    def client(self) -> MlflowClient:
        """
        The ``MlflowClient``, built on first use.

        :raises UnsupportedVersionError: The installed mlflow is outside the versions whose
            client can carry per-hook credentials, and the connection has credentials.
        """
        settings = self._settings
        client = compat.client_with_credentials(
            settings["tracking_uri"], settings["registry_uri"], **self._credentials
        )
        self.log.info(
            "MLflow client for tracking URI %s (registry %s)",
            settings["tracking_uri"],
            settings["registry_uri"],
        )
        return client

    def get_conn(self) -> MlflowClient:
        """Return the ``MlflowClient``."""
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """
        Check that the registry answers one search call (used by the Airflow UI).

        For an HTTP server the call is made once, without MLflow's retries, so a wrong address
        fails in seconds rather than after minutes of back-off.
        """
        try:
            answered = None
            if self.registry_is_http:
                answered = compat.request_once(
                    self.registry_uri,
                    "/api/2.0/mlflow/registered-models/search",
                    "GET",
                    timeout=10,
                    params={"max_results": 1},
                    **self._credentials,
                )
            if answered is None:
                self.client.search_registered_models(max_results=1)
        except Exception as err:
            return False, f"MLflow at {self._safe_uri()} did not answer: {err}"
        return True, f"Connected to MLflow at {self._safe_uri()}"

    def _safe_uri(self) -> str:
        try:
            return self.tracking_uri
        except Exception:
            return f"<connection {self.mlflow_conn_id!r}>"

    def create_model_version_once(
        self,
        *,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        model_id: str | None = None,
    ) -> Any:
        """
        Create a model version with exactly one HTTP attempt (MLflow's client retries a POST
        whose response was lost, which creates a second version); the caller decides what a
        lost response means. Non-HTTP registries go through the client.

        :raises mlflow.exceptions.RestException: The server answered with an error.
        :raises mlflow.exceptions.MlflowException: No answer (connection refused, reset...).
        :raises UnsupportedVersionError: An HTTP registry on an mlflow outside the gate.
        """
        if not self.registry_is_http:
            return self.client.create_model_version(
                name=name,
                source=source,
                run_id=run_id,
                tags=tags,
                description=description,
                await_creation_for=0,
                model_id=model_id,
            )
        body: dict[str, Any] = {
            "name": name,
            "source": source,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        for key, value in (("run_id", run_id), ("description", description), ("model_id", model_id)):
            if value:
                body[key] = value
        return compat.create_model_version_single_attempt(self.registry_uri, body, **self._credentials)

    # What an MLflow error means: the one classification, in hooks/mlflow_errors.py.
    is_not_found = staticmethod(mlflow_errors.is_not_found)
    is_already_exists = staticmethod(mlflow_errors.is_already_exists)
    is_model_missing = staticmethod(mlflow_errors.is_model_missing)
    is_transient_error = staticmethod(mlflow_errors.is_transient_error)
    is_timeout = staticmethod(mlflow_errors.is_timeout)

    def is_answer(self, err: BaseException) -> bool:
        """
        True when ``err`` is the registry's answer (an HTTP error response, or any error of an
        embedded ``sqlite:``/``file:`` registry), False when the request got no answer.
        """
        from mlflow.exceptions import RestException

        return isinstance(err, RestException) or not self.registry_is_http

    def run_url(self, experiment_id: str | None, run_id: str | None) -> str:
        """The UI URL of a run, or "" when there is no UI URL or no run."""
        if not self.ui_url or not run_id or not experiment_id:
            return ""
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, model_name: str, version: str | int | None) -> str:
        """The UI URL of a registered model version, or "" when there is no UI URL."""
        from urllib.parse import quote

        if not self.ui_url or version in (None, ""):
            return ""
        return f"{self.ui_url}/#/models/{quote(model_name, safe='')}/versions/{version}"
