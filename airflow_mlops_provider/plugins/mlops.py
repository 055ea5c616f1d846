"""The provider's Airflow plugin, loaded through the ``airflow.plugins`` entry point.

It adds four pages to the Airflow UI, all served by the ``mlops`` FastAPI app
(:mod:`airflow_mlops_provider.plugins.app`) on the api-server under ``/mlops``:

- **Sweep**, a tab of every DAG run page: the leaderboard, charts and failures of the run's sweep;
- **Models**, **Features** and **GPUs**, in the nav: the MLflow registry behind each ``mlflow``
  connection, the Feast feature views behind each ``feast`` connection, and GPU leases.

Importing this module imports neither FastAPI nor any view: the scheduler, the DAG processor
and the workers load plugins too. The app is built when the api-server first reads
``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

__all__ = ["EXTERNAL_VIEWS", "MlopsPlugin"]

_ICON = "/mlops/assets/icon.svg"

#: The pages, as Airflow's UI lists them (``url_route`` embeds them in the UI's own frame).
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {
        "name": "Sweep",
        "href": "/mlops/sweeps/{DAG_ID}/{RUN_ID}",
        "destination": "dag_run",
        "url_route": "mlops-sweep",
        "icon": _ICON,
    },
    {
        "name": "Models",
        "href": "/mlops/models",
        "destination": "nav",
        "url_route": "mlops-models",
        "category": "MLOps",
        "icon": _ICON,
    },
    {
        "name": "Features",
        "href": "/mlops/features",
        "destination": "nav",
        "url_route": "mlops-features",
        "category": "MLOps",
        "icon": _ICON,
    },
    {
        "name": "GPUs",
        "href": "/mlops/gpus",
        "destination": "nav",
        "url_route": "mlops-gpus",
        "category": "MLOps",
        "icon": _ICON,
    },
]


class _BuiltOnFirstRead:
    """A class attribute whose value is built the first time it is read (by the api-server)."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        from airflow_mlops_provider.plugins.app import fastapi_apps

        return fastapi_apps()


class MlopsPlugin(AirflowPlugin):
    """Registers airflow-mlops-provider's UI pages with Airflow's plugin manager."""

    name = "mlops"
    fastapi_apps = _BuiltOnFirstRead()  # type: ignore[assignment]
    external_views = EXTERNAL_VIEWS
