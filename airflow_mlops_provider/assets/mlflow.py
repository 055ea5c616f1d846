"""Airflow Assets for MLflow registered models.

A registered model is the Asset ``mlflow-model://<registered model name>`` (the name is
percent-encoded, so ``team/churn model`` becomes ``mlflow-model://team%2Fchurn%20model``).
Airflow normalizes the URI with a trailing ``/`` (``mlflow-model://churn/``); build the Asset
with :func:`mlflow_model_asset` so producer and consumer always agree. The scheme names the kind
of thing, not the server: a deployment DAG schedules on the model it
deploys wherever its registry lives.

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

from urllib.parse import quote, unquote, urlsplit

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


def model_name_from_uri(uri: str) -> str:
    """Return the registered model name an ``mlflow-model://`` URI stands for."""
    parts = urlsplit(uri)
    if parts.scheme != MLFLOW_MODEL_SCHEME or not parts.netloc:
        raise ValueError(f"uri must look like 'mlflow-model://<name>', got {uri!r}")
    return unquote(parts.netloc)


def mlflow_model_events_alias() -> AssetAlias:
    """Return the AssetAlias the registry operators emit model events through."""
    return AssetAlias(name=MLFLOW_MODEL_EVENTS_ALIAS)
