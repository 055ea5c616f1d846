"""Extra links "MLflow run" and "MLflow model version" for the MLflow registry tasks.

The operators push the run id and the version's UI URL (from the connection's ``ui_url`` extra,
or the tracking URI of an ``http(s)`` server) as the XCom ``mlflow_urls``. Airflow 3 calls
:meth:`get_link` in the worker when the task finishes and stores the result under the link's
own XCom key, which the UI reads; no plugin registration is needed. A link is empty (hidden) when the
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


def push_mlflow_urls(context: Context, *, run_id: str = "", model_version: str = "") -> None:
    """Push what the extra links show: the run id and the version's UI URL ("" hides a link)."""
    context["ti"].xcom_push(
        key=MLFLOW_URLS_XCOM_KEY, value={"run_id": run_id, "model_version": model_version}
    )


def _pushed(ti_key: TaskInstanceKey) -> dict[str, Any]:
    from airflow.sdk.bases.xcom import BaseXCom

    urls: Any = BaseXCom.get_value(ti_key=ti_key, key=MLFLOW_URLS_XCOM_KEY)  # type: ignore[arg-type]
    return urls if isinstance(urls, dict) else {}


def run_url_for(conn_id: str, run_id: str) -> str:
    """The UI URL of ``run_id`` (its experiment is looked up), or "" without a UI URL."""
    from airflow_mlops_provider.hooks.mlflow import MlflowHook

    hook = MlflowHook(mlflow_conn_id=conn_id)
    if not run_id or not hook.ui_url:
        return ""
    experiment_id = hook.get_conn().get_run(run_id).info.experiment_id
    return hook.run_url(experiment_id, run_id)


class MlflowRunLink(BaseOperatorLink):
    """Link to the MLflow run that produced the task's model version."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Resolved when the task finishes (Airflow stores the result), off the task's hot path.
        run_id = str(_pushed(ti_key).get("run_id") or "")
        conn_id = getattr(operator, "mlflow_conn_id", None)
        return run_url_for(conn_id, run_id) if run_id and conn_id else ""


class MlflowModelVersionLink(BaseOperatorLink):
    """Link to the registered model version the task created, moved an alias to, or waited for."""

    name = "MLflow model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(_pushed(ti_key).get("model_version") or "")
