"""Every use of MLflow's private API, each behind a version gate.

The hook relies on two pieces of MLflow that are not public API. Each was read in the installed
3.17.2, and in the wheels of 3.1.0 (the declared floor) and 3.18.0 (the newest release); all
three have the same shape. Both gates cover ``3.1.0 <= mlflow < 3.19``.

- ``REST_STORES_GATE``: an ``MlflowClient`` whose tracking and registry clients use REST stores
  of its own that carry the hook's credentials. MLflow's public client reads credentials only
  from environment variables (``MLFLOW_TRACKING_TOKEN``...) and the ``~/.mlflow/credentials``
  file, both shared by the whole process, and the hook never writes either. Fallback outside
  the gate: a plain ``MlflowClient(tracking_uri, registry_uri)`` when the connection has no
  credentials and no TLS setting; with credentials, :class:`UnsupportedVersionError` rather than
  a token leaked into ``os.environ``.
- ``SINGLE_REQUEST_GATE``: one HTTP request without MLflow's retries, answered as MLflow's own
  client would (``RestException`` for an error answer, ``MlflowException`` for no answer).
  Creating a model version needs it: MLflow's client re-sends a POST whose response was lost,
  which registers a second version. Fallback outside the gate: ``test_connection`` uses the
  client's retried search; creating a version raises :class:`UnsupportedVersionError`.

Importing this module imports no mlflow.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider._compat import UnsupportedVersionError, VersionRange, version_gate

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "REST_STORES_GATE",
    "SINGLE_REQUEST_GATE",
    "client_with_credentials",
    "create_model_version_single_attempt",
    "request_once",
]

_LOWEST, _BELOW = "3.1.0", "3.19"
_HTTP_SCHEMES = ("http", "https")

#: mlflow/tracking/client.py ``MlflowClient.__init__`` sets ``self._tracking_client =
#: TrackingServiceClient(final_tracking_uri)``; ``MlflowClient._get_registry_client`` returns
#: ``self._registry_client_lazy`` when set, else builds ``ModelRegistryClient(registry_uri,
#: tracking_uri)`` into it. mlflow/tracking/_tracking_service/client.py
#: ``TrackingServiceClient.__init__(tracking_uri)`` and mlflow/tracking/_model_registry/client.py
#: ``ModelRegistryClient.__init__(registry_uri, tracking_uri)`` read ``self.store``, a property
#: every method goes through. mlflow/store/{tracking,model_registry}/rest_store.py
#: ``RestStore.__init__(get_host_creds)``; mlflow/utils/rest_utils.py ``MlflowHostCreds(host,
#: username=, password=, token=, ignore_tls_verification=)``.
REST_STORES_GATE = VersionRange(
    "mlflow",
    _LOWEST,
    _BELOW,
    "MlflowClient._tracking_client and ._registry_client_lazy bound to per-client "
    "TrackingServiceClient/ModelRegistryClient (mlflow.tracking._tracking_service, "
    "mlflow.tracking._model_registry) over RestStore(get_host_creds)",
)
#: mlflow/utils/rest_utils.py ``http_request(host_creds, endpoint, method, max_retries=,
#: timeout=, **kwargs)`` (``max_retries=0``: one attempt) and ``verify_rest_response(response,
#: endpoint)`` (``RestException`` for a JSON error body, ``MlflowException`` otherwise);
#: mlflow/protos/model_registry_pb2.py ``CreateModelVersion.Response`` (with ``model_id`` since
#: 3.0), mlflow/utils/proto_json_utils.py ``parse_dict`` and
#: mlflow/entities/model_registry/model_version.py ``ModelVersion.from_proto``. (3.18.0's
#: ``call_endpoint`` itself stops re-sending a non-idempotent POST after a read error,
#: ``_non_idempotent_write_retry_kwargs``; from there on the client's own create could become
#: the public path, once a floor at 3.18 is acceptable.)
SINGLE_REQUEST_GATE = VersionRange(
    "mlflow",
    _LOWEST,
    _BELOW,
    "mlflow.utils.rest_utils.http_request(max_retries=0)/verify_rest_response and "
    "mlflow.protos.model_registry_pb2.CreateModelVersion",
)


def is_http(uri: str) -> bool:
    """True for an ``http(s)://`` URI (a tracking server), False for ``sqlite:``, ``file:``..."""
    return uri.split("://", 1)[0] in _HTTP_SCHEMES


def host_creds(uri: str, *, login: str | None, secret: str | None, insecure: bool) -> Any:
    """``MlflowHostCreds`` for ``uri``: basic auth with a login, else the secret as a token."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    if login:
        return MlflowHostCreds(uri, username=login, password=secret, ignore_tls_verification=insecure)
    return MlflowHostCreds(uri, token=secret, ignore_tls_verification=insecure)


def client_with_credentials(
    tracking_uri: str,
    registry_uri: str,
    *,
    login: str | None,
    secret: str | None,
    insecure: bool,
) -> MlflowClient:
    """
    Return an ``MlflowClient`` whose HTTP stores carry these credentials, and nobody else's.

    Non-HTTP URIs (``sqlite:``, ``file:``, ``databricks``...) keep MLflow's own stores.

    :raises UnsupportedVersionError: Outside ``REST_STORES_GATE`` when credentials or a TLS
        setting would have to go through the environment.
    """
    from mlflow import MlflowClient

    from airflow_mlops_provider._compat.mlflow_headers import defer_feast_header_plugin

    defer_feast_header_plugin()  # before the client's first request
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    if not (is_http(tracking_uri) or is_http(registry_uri)):
        return client
    if not version_gate(REST_STORES_GATE):
        if login or secret or insecure:
            raise UnsupportedVersionError(
                REST_STORES_GATE.describe(_installed())
                + "; MLflow's public client takes credentials only from environment variables "
                "or ~/.mlflow/credentials, which this provider never writes"
            )
        return client
    creds = partial(host_creds, login=login, secret=secret, insecure=insecure)
    _bind_rest_stores(client, tracking_uri, registry_uri, creds)
    return client


def _installed() -> str | None:
    from airflow_mlops_provider._compat import installed_version

    return installed_version("mlflow")


def _bind_rest_stores(client: Any, tracking_uri: str, registry_uri: str, creds: Any) -> None:
    from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
    from mlflow.store.tracking.rest_store import RestStore as TrackingRestStore
    from mlflow.tracking._model_registry.client import ModelRegistryClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    class _TrackingClient(TrackingServiceClient):
        def __init__(self, tracking_uri: str, store: Any) -> None:
            self._bound_store = store
            super().__init__(tracking_uri)

        @property
        def store(self) -> Any:
            return self._bound_store

    class _RegistryClient(ModelRegistryClient):
        def __init__(self, registry_uri: str, tracking_uri: str, store: Any) -> None:
            self._bound_store = store
            super().__init__(registry_uri, tracking_uri)

        @property
        def store(self) -> Any:
            return self._bound_store

    if is_http(tracking_uri):
        tracking_store = TrackingRestStore(partial(creds, tracking_uri))
        client._tracking_client = _TrackingClient(tracking_uri, tracking_store)
    if is_http(registry_uri):
        registry_store = RegistryRestStore(partial(creds, registry_uri))
        client._registry_client_lazy = _RegistryClient(registry_uri, tracking_uri, registry_store)


def request_once(
    uri: str,
    endpoint: str,
    method: str,
    *,
    login: str | None,
    secret: str | None,
    insecure: bool,
    timeout: float | None = None,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """
    Send one request (no retries) to the server at ``uri`` and return its JSON answer; None
    outside the gate (the caller takes MLflow's public, retried client instead).

    :raises mlflow.exceptions.RestException: The server answered with an error.
    :raises mlflow.exceptions.MlflowException: No answer, or one that is not JSON.
    """
    if not version_gate(SINGLE_REQUEST_GATE):
        return None
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    from airflow_mlops_provider._compat.mlflow_headers import defer_feast_header_plugin

    defer_feast_header_plugin()

    creds = host_creds(uri, login=login, secret=secret, insecure=insecure)
    response = http_request(creds, endpoint, method, max_retries=0, timeout=timeout, **kwargs)
    answer: dict[str, Any] = verify_rest_response(response, endpoint).json()
    return answer


def create_model_version_single_attempt(
    uri: str, body: dict[str, Any], *, login: str | None, secret: str | None, insecure: bool
) -> ModelVersion:
    """
    POST ``/api/2.0/mlflow/model-versions/create`` to ``uri`` once; return the new version.

    :raises UnsupportedVersionError: Outside ``SINGLE_REQUEST_GATE`` (MLflow's public client
        would re-send a POST whose response was lost, and register a second version).
    """
    version_gate(SINGLE_REQUEST_GATE, strict=True)
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.protos.model_registry_pb2 import CreateModelVersion
    from mlflow.utils.proto_json_utils import parse_dict

    endpoint = "/api/2.0/mlflow/model-versions/create"
    answer = request_once(uri, endpoint, "POST", login=login, secret=secret, insecure=insecure, json=body)
    proto = CreateModelVersion.Response()
    parse_dict(answer, proto)
    return ModelVersion.from_proto(proto.model_version)
