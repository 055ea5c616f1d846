"""How the Models view reaches one connection's MLflow registry: a bounded call per question.

An ``http(s)`` registry is asked with single requests bounded by :data:`TIMEOUT`, through
``_compat.mlflow.request_once`` (MLflow's own client retries for minutes when the server is
down); an embedded ``sqlite:``/``file:`` registry through the hook's client. Both answers come
back in MLflow's REST JSON shape. Each connection's hook is reused for :data:`HOOK_TTL` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider._compat import mlflow as compat

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_mlops_provider.hooks.mlflow import MlflowHook

__all__ = ["HOOK_TTL", "TIMEOUT", "Registry", "registry_hook"]

#: Seconds one registry call may take.
TIMEOUT = 5.0
#: How long a connection's hook (and client) is reused.
HOOK_TTL = 60.0

_hooks: dict[str, tuple[float, MlflowHook]] = {}
_hooks_lock = threading.Lock()


def _ensure_mlflow() -> None:
    """Import mlflow once per process, through the plugin's one import lock (see ``warmup``)."""
    from airflow_mlops_provider.plugins.warmup import ensure_imported

    ensure_imported("mlflow.tracking")
    ensure_imported("mlflow.utils.proto_json_utils")


def registry_hook(conn_id: str) -> MlflowHook:
    """The connection's MlflowHook, reused for :data:`HOOK_TTL` seconds (mlflow imported first)."""
    from airflow_mlops_provider.hooks.mlflow import MlflowHook

    _ensure_mlflow()

    now = time.monotonic()
    with _hooks_lock:
        cached = _hooks.get(conn_id)
        if cached and now - cached[0] < HOOK_TTL:
            return cached[1]
        hook = MlflowHook(mlflow_conn_id=conn_id)
        _hooks[conn_id] = (now, hook)
        return hook


def _as_json(entity: Any) -> dict[str, Any]:
    from mlflow.utils.proto_json_utils import message_to_json

    return dict(json.loads(message_to_json(entity.to_proto())))


class Registry:
    """One connection's registry, each call a single bounded request (or the embedded client)."""

    def __init__(self, hook: MlflowHook) -> None:
        self.hook = hook

    def _rest(self, uri: str, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any] | None:
        if not compat.is_http(uri):
            return None
        creds = self.hook._credentials
        return compat.request_once(
            uri, f"/api/2.0/mlflow/{endpoint}", method, timeout=TIMEOUT, **creds, **kwargs
        )

    def search_models(
        self, max_results: int, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        params = {"max_results": max_results, "order_by": ["name ASC"], "page_token": page_token}
        answer = self._rest(self.hook.registry_uri, "GET", "registered-models/search", params=params)
        if answer is None:
            page = self.hook.client.search_registered_models(
                max_results=max_results, order_by=["name ASC"], page_token=page_token
            )
            return [_as_json(m) for m in page], page.token
        return list(answer.get("registered_models", [])), answer.get("next_page_token") or None

    def get_model(self, name: str) -> dict[str, Any]:
        answer = self._rest(self.hook.registry_uri, "GET", "registered-models/get", params={"name": name})
        if answer is None:
            return _as_json(self.hook.client.get_registered_model(name))
        return dict(answer.get("registered_model", {}))

    def search_versions(
        self, filter_string: str, max_results: int, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        order_by = ["version_number DESC"]
        params = {
            "filter": filter_string,
            "max_results": max_results,
            "order_by": order_by,
            "page_token": page_token,
        }
        answer = self._rest(self.hook.registry_uri, "GET", "model-versions/search", params=params)
        if answer is None:
            page = self.hook.client.search_model_versions(
                filter_string, max_results=max_results, order_by=order_by, page_token=page_token
            )
            return [_as_json(v) for v in page], page.token
        return list(answer.get("model_versions", [])), answer.get("next_page_token") or None

    def experiments_of_runs(self, run_ids: Iterable[str]) -> dict[str, str]:
        """``{run_id: experiment_id}`` for the runs, in two calls (experiments, then runs)."""
        from airflow_mlops_provider.hooks.mlflow import filter_literal

        wanted = sorted({r for r in run_ids if r and "'" not in r and "\\" not in r})
        if not wanted or not self.hook.ui_url:
            return {}
        uri = self.hook.tracking_uri
        answer = self._rest(
            uri, "GET", "experiments/search", params={"max_results": 1000, "view_type": "ALL"}
        )
        if answer is None:
            from mlflow.entities import ViewType

            experiment_ids = [
                e.experiment_id for e in self.hook.client.search_experiments(ViewType.ALL, 1000)
            ]
        else:
            experiment_ids = [e["experiment_id"] for e in answer.get("experiments", [])]
        if not experiment_ids:
            return {}
        clause = f"attributes.run_id IN ({', '.join(filter_literal(r) for r in wanted)})"
        body = {
            "experiment_ids": experiment_ids,
            "filter": clause,
            "max_results": len(wanted),
            "run_view_type": "ALL",
        }
        found = self._rest(uri, "POST", "runs/search", json=body)
        if found is None:
            from mlflow.entities import ViewType

            runs = self.hook.client.search_runs(
                experiment_ids, clause, run_view_type=ViewType.ALL, max_results=len(wanted)
            )
            return {r.info.run_id: r.info.experiment_id for r in runs}
        return {r["info"]["run_id"]: r["info"]["experiment_id"] for r in found.get("runs", [])}
