"""Airflow Assets for MLflow registered models.

A registered model is the Asset ``mlflow-model://<registered model name>`` (the name is
percent-encoded, so ``team/churn model`` becomes ``mlflow-model://team%2Fchurn%20model``).
The provider registers :func:`sanitize_uri` for the scheme (``asset-uris`` in its provider
info), so Airflow stores the URI as written, ``mlflow-model://churn`` (without a handler it
would add a trailing ``/``), ``Asset.ref(uri="mlflow-model://churn")`` finds it, and a URI that
cannot name a model (``mlflow-model://team/churn``) is refused when the DAG is parsed. Build the
Asset with :func:`mlflow_model_asset`, so its name (which Airflow does not normalise) is the
same URI. The scheme names the kind of thing, not the server: a deployment DAG schedules on the
model it deploys wherever its registry lives.

The registry operators emit one event on this Asset for every new model version and every alias
promotion, through the ``mlflow-model-events`` :class:`~airflow.sdk.AssetAlias` they add to their
outlets. Because events go through the alias, the model name may be templated, and a
champion/challenger comparison that keeps the champion emits nothing. Each event's ``extra``
holds ``event`` (``"registered"`` or ``"promoted"``), ``model_name``, ``version`` and, for
promotions, ``alias``, ``metric`` and the compared values.

Schedule a deployment DAG on a model::

    from airflow.sdk import dag
    from airflow_mlops_provider.assets.mlflow import mlflow_model_asset

    @dag(schedule=[mlflow_model_asset("churn")])
    def deploy_churn(): ...
"""

from __future__ import annotations

from urllib.parse import SplitResult, quote, unquote, urlsplit

from airflow.sdk import Asset, AssetAlias

#: URI scheme of registered-model Assets.
MLFLOW_MODEL_SCHEME = "mlflow-model"
#: Name of the AssetAlias through which the registry operators emit model events.
MLFLOW_MODEL_EVENTS_ALIAS = "mlflow-model-events"


def mlflow_model_uri(model_name: str) -> str:
    """Return the Asset URI of a registered model: ``mlflow-model://<percent-encoded name>``."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    return f"{MLFLOW_MODEL_SCHEME}://{quote(model_name, safe='')}"


def mlflow_model_asset(model_name: str) -> Asset:
    """Return the Asset of a registered model (name and URI are both the model URI)."""
    uri = mlflow_model_uri(model_name)
    return Asset(name=uri, uri=uri)


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Normalise an ``mlflow-model://`` Asset URI; Airflow calls this for every Asset of the scheme.

    The result is ``mlflow-model://<name>`` with the name percent-encoded as
    :func:`mlflow_model_uri` does (``%2f`` and ``%2F`` agree) and no path, so no trailing ``/``.

    :param uri: The URI as Airflow splits it (it has already turned an empty path into ``/``).
    :raises ValueError: when the URI does not name exactly one model.
    """
    name = unquote(uri.netloc)
    if not name.strip():
        problem = f"has no model name after '{MLFLOW_MODEL_SCHEME}://'"
    elif uri.path not in ("", "/"):
        problem = "has a path (write a '/' in the model name as %2F)"
    elif uri.query:
        problem = "has a query"
    else:
        return SplitResult(uri.scheme, quote(name, safe=""), "", "", "")
    raise ValueError(
        f"An {MLFLOW_MODEL_SCHEME} Asset URI must be {MLFLOW_MODEL_SCHEME}://<percent-encoded registered "
        f"model name>, as mlflow_model_uri(name) builds it; got {uri.geturl()!r}, which {problem}"
    )


def model_name_from_uri(uri: str) -> str:
    """Return the registered model name an ``mlflow-model://`` URI stands for."""
    parts = urlsplit(uri)
    if parts.scheme != MLFLOW_MODEL_SCHEME:
        raise ValueError(f"uri must look like 'mlflow-model://<name>', got {uri!r}")
    return unquote(sanitize_uri(parts).netloc)


def mlflow_model_events_alias() -> AssetAlias:
    """Return the AssetAlias the registry operators emit model events through."""
    return AssetAlias(name=MLFLOW_MODEL_EVENTS_ALIAS)
