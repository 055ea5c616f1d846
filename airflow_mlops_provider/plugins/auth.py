"""Who may see what: every page of the plugin goes through Airflow's own auth manager.

Airflow does not protect a plugin's FastAPI app by itself. Every route of the ``mlops`` app
depends on :data:`CurrentUser`, which is Airflow's own ``get_user`` (the REST API's bearer token
or the UI's session cookie, not a second login): no token gives 401. Pages about one DAG also
call :func:`require_dag`, which asks the auth manager whether the user may read that DAG.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException

from airflow_mlops_provider._compat import airflow_ui

__all__ = ["CurrentUser", "can_read_dag", "readable_dag_ids", "require_dag"]


#: The signed-in Airflow user (401 without a token or session cookie).
CurrentUser = Annotated[Any, Depends(airflow_ui.current_user())]


def can_read_dag(user: Any, dag_id: str, entity: str | None = "XCOM") -> bool:
    """Return whether the auth manager lets ``user`` read ``dag_id``'s ``entity`` (XCom by default)."""
    return airflow_ui.can_read_dag(user, dag_id, entity)


def readable_dag_ids(user: Any) -> set[str]:
    """Return the DAG ids ``user`` may read."""
    return airflow_ui.readable_dag_ids(user)


def require_dag(user: Any, dag_id: str, entity: str | None = "XCOM") -> None:
    """
    Raise 403 unless the auth manager lets ``user`` read ``dag_id``.

    :param user: The signed-in user.
    :param dag_id: The DAG whose data the page shows.
    :param entity: The part of the DAG read (``DagAccessEntity`` name); XCom by default.
    """
    if not can_read_dag(user, dag_id, entity):
        raise HTTPException(status_code=403, detail=f"you may not read the data of DAG {dag_id!r}")
