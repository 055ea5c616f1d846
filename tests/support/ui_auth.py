"""A tiny auth manager for the plugin's security tests: SimpleAuthManager that hides listed DAGs.

SimpleAuthManager's roles are global: a viewer reads every DAG. To test that a page about one
DAG asks the auth manager about that DAG, :class:`PerDagAuthManager` denies listed users every
access to listed DAGs and otherwise answers exactly as SimpleAuthManager does (same users,
same login, same tokens). Configure it on the api-server with::

    AIRFLOW__CORE__AUTH_MANAGER=tests.support.ui_auth.PerDagAuthManager
    MLOPS_TEST_DENY="bob:dag_a,dag_b;carol:dag_c"
    PYTHONPATH=<the repository root>
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

__all__ = ["DENY_ENV", "PerDagAuthManager", "denied_dags"]

#: The environment variable listing who may not read which DAGs.
DENY_ENV = "MLOPS_TEST_DENY"


def denied_dags(spec: str | None = None) -> dict[str, set[str]]:
    """
    Parse ``"bob:dag_a,dag_b;carol:dag_c"`` into ``{"bob": {"dag_a", "dag_b"}, "carol": {"dag_c"}}``.

    :param spec: The text; ``$MLOPS_TEST_DENY`` when None.
    :raises ValueError: naming the part that has no ``user:`` prefix or no DAG.
    """
    text = os.environ.get(DENY_ENV, "") if spec is None else spec
    denied: dict[str, set[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        user, sep, dags = part.partition(":")
        dag_ids = {d.strip() for d in dags.split(",") if d.strip()}
        if not sep or not user.strip() or not dag_ids:
            raise ValueError(f"{DENY_ENV}: {part!r} is not 'user:dag_id[,dag_id...]'")
        denied.setdefault(user.strip(), set()).update(dag_ids)
    return denied


class PerDagAuthManager(SimpleAuthManager):
    """SimpleAuthManager, except that the users in ``$MLOPS_TEST_DENY`` may not touch their DAGs."""

    @property
    def denied(self) -> dict[str, set[str]]:
        """Who may not read which DAGs (read from the environment on each check)."""
        return denied_dags()

    def is_authorized_dag(
        self,
        *,
        method: ResourceMethod,
        user: SimpleAuthManagerUser,
        access_entity: DagAccessEntity | None = None,
        details: DagDetails | None = None,
    ) -> bool:
        dag_id = details.id if details else None
        if dag_id and dag_id in self.denied.get(user.username, ()):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
