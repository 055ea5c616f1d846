"""The Features page (nav): every Feast feature view, its last window, freshness and last run.

``GET /mlops/features`` (HTML) and ``GET /mlops/api/features`` (JSON) render the same report
(:func:`~airflow_mlops_provider.plugins.features_data.features_report`). A broken repo or an
unreachable registry is a notice naming the connection; materialize runs of DAGs the user may
not read are not shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from airflow_mlops_provider.plugins.auth import CurrentUser, readable_dag_ids
from airflow_mlops_provider.plugins.features_data import FRESHNESS_TAG, features_report
from airflow_mlops_provider.plugins.render import page

__all__ = ["router"]

router = APIRouter()


async def _report(user: Any) -> dict[str, Any]:
    readable = await run_in_threadpool(readable_dag_ids, user)
    return await run_in_threadpool(features_report, readable)


@router.get("/features", response_class=HTMLResponse)
async def features_page(user: CurrentUser) -> HTMLResponse:
    """The Features page."""
    report = await _report(user)
    return page("features.html", title="Features", active="/mlops/features", report=report, tag=FRESHNESS_TAG)


@router.get("/api/features")
async def features_json(user: CurrentUser) -> dict[str, Any]:
    """The Features page's data as JSON."""
    return await _report(user)
