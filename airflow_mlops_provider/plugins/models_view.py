"""The Models view (nav "MLOps" > "Models"): the MLflow registry behind each ``mlflow`` connection.

- ``GET /mlops/models``: every registered model of every connection (name, latest version,
  aliases, last promotion decision), one page of :data:`~.models_data.MODELS_PAGE_SIZE` each;
- ``GET /mlops/models/{conn_id}/{name}``: one model's versions newest first, 50 a page
  (MLflow's ``page_token``), with source run, creation time, the registering DAG run, aliases and
  the promotion history.

Each page has a JSON twin under ``/mlops/api/models...`` built from the same data function. A
registry that does not answer gives the page a readable notice (never a 500); what is read is
in :mod:`.models_data`. The registry calls are blocking, so the routes are plain ``def`` (run in
FastAPI's thread pool).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse

from airflow_mlops_provider.plugins import models_data
from airflow_mlops_provider.plugins.auth import CurrentUser, can_read_dag
from airflow_mlops_provider.plugins.render import page

__all__ = ["router"]

router = APIRouter()

ACTIVE = "/mlops/models"

PageToken = Annotated[str | None, Query(max_length=2000)]
PageNumber = Annotated[int, Query(alias="page", ge=1, le=100_000)]


def _overview(conn_id: str | None, page_token: str | None) -> dict[str, Any]:
    return models_data.models_overview(conn_id=conn_id, page_token=page_token)


def _detail(user: Any, conn_id: str, name: str, page_token: str | None, page_number: int) -> dict[str, Any]:
    try:
        data = models_data.model_detail(conn_id, name, page_token=page_token, page=page_number)
    except LookupError as err:
        raise HTTPException(status_code=404, detail=str(err)) from err
    return hide_unreadable_dags(user, data)


def hide_unreadable_dags(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    """
    Drop the registering DAG run of each version whose DAG the user may not read.

    The ``airflow.*`` tags name a DAG, its run and task; a user who may not read that DAG in
    Airflow does not learn them here either (the row says so instead). The auth manager is
    asked once per DAG id on the page, as for a DAG of Airflow's own REST API.
    """
    rows = [v for v in data.get("versions") or [] if v.get("registered_by")]
    allowed: dict[str, bool] = {}
    for version in rows:
        dag_id = version["registered_by"]["dag_id"]
        if dag_id not in allowed:
            allowed[dag_id] = can_read_dag(user, dag_id, None)
        if not allowed[dag_id]:
            version["registered_by"] = {"hidden": True}
    return data


@router.get("/models", response_class=HTMLResponse)
def models_page(user: CurrentUser, conn_id: str | None = None, page_token: PageToken = None) -> HTMLResponse:
    """Every registered model of every ``mlflow`` connection."""
    data = _overview(conn_id, page_token)
    return page("models.html", title="Models", active=ACTIVE, **data)


@router.get("/api/models")
def models_json(
    user: CurrentUser, conn_id: str | None = None, page_token: PageToken = None
) -> dict[str, Any]:
    """JSON twin of :func:`models_page`."""
    return _overview(conn_id, page_token)


@router.get("/models/{conn_id}/{name:path}", response_class=HTMLResponse)
def model_page(
    user: CurrentUser, conn_id: str, name: str, page_token: PageToken = None, page_number: PageNumber = 1
) -> HTMLResponse:
    """One registered model: versions newest first (paged), aliases and promotion history."""
    data = _detail(user, conn_id, name, page_token, page_number)
    return page("model.html", title=f"Model {name}", active=ACTIVE, model=data)


@router.get("/api/models/{conn_id}/{name:path}")
def model_json(
    user: CurrentUser, conn_id: str, name: str, page_token: PageToken = None, page_number: PageNumber = 1
) -> dict[str, Any]:
    """JSON twin of :func:`model_page`."""
    return _detail(user, conn_id, name, page_token, page_number)
