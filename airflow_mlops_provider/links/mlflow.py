"""Extra links "MLflow run" and "MLflow model version" for the MLflow registry tasks.

The operators compute the URLs while they run (from the connection's ``ui_url`` extra, or the
tracking URI of an ``http(s)`` server) and push them as the XCom ``mlflow_urls``. Airflow 3
calls :meth:`get_link` when the task finishes and stores the result under the link's own XCom
key, which the UI reads; no plugin registration is needed. A link is empty (hidden) when the
tracking server has no UI URL, e.g. for a ``sqlite:`` store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which the operators push ``{"run": url, "model_version": url}``.
MLFLOW_URLS_XCOM_KEY = "mlflow_urls"


def push_mlflow_urls(context: Context, *, run: str = "", model_version: str = "") -> None:
    """Push the UI URLs the extra links show (empty strings hide the links)."""
    context["ti"].xcom_push(key=MLFLOW_URLS_XCOM_KEY, value={"run": run, "model_version": model_version})


def _pushed_url(ti_key: TaskInstanceKey, which: str) -> str:
    from airflow.sdk.bases.xcom import BaseXCom

    urls: Any = BaseXCom.get_value(ti_key=ti_key, key=MLFLOW_URLS_XCOM_KEY)  # type: ignore[arg-type]
    if isinstance(urls, dict):
        return str(urls.get(which) or "")
    return ""


class MlflowRunLink(BaseOperatorLink):
    """Link to the MLflow run that produced the task's model version."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pushed_url(ti_key, "run")


class MlflowModelVersionLink(BaseOperatorLink):
    """Link to the registered model version the task created, moved an alias to, or waited for."""

    name = "MLflow model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pushed_url(ti_key, "model_version")
