"""MlflowModelVersionTrigger: wait, in the triggerer, for a model version or an alias move."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def find_model_version(
    hook: Any, model_name: str, *, alias: str | None = None, min_version: int | None = None
) -> dict[str, Any] | None:
    """
    Return ``{"name", "version", "alias", "run_id"}`` once the condition holds, else ``None``.

    - ``alias`` alone: the alias points at some version;
    - ``alias`` and ``min_version``: the alias points at a version ``>= min_version``;
    - ``min_version`` alone: a version ``>= min_version`` exists.

    A registered model that does not exist yet counts as "not yet".
    """
    from mlflow.exceptions import MlflowException

    client = hook.get_conn()
    try:
        if alias:
            mv = client.get_model_version_by_alias(model_name, alias)
        else:
            escaped = model_name.replace("'", "\\'")
            found = client.search_model_versions(
                f"name = '{escaped}'", max_results=1, order_by=["version_number DESC"]
            )
            if not found:
                return None
            mv = found[0]
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    if min_version is not None and int(mv.version) < int(min_version):
        return None
    return {"name": model_name, "version": str(mv.version), "alias": alias, "run_id": mv.run_id}


class MlflowModelVersionTrigger(BaseTrigger):
    """
    Poll the MLflow registry until a model version appears or an alias moves.

    The blocking MLflow client runs in a worker thread (``asyncio.to_thread``), so the
    triggerer's event loop never blocks. Yields one event:
    ``{"status": "success" | "error", "message": ..., "model_version": {...} | None}``.

    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    :param model_name: Registered model name.
    :param alias: Alias to watch.
    :param min_version: Smallest version number that satisfies the wait.
    :param poll_interval: Seconds between registry queries.
    """

    def __init__(
        self,
        *,
        mlflow_conn_id: str,
        model_name: str,
        alias: str | None = None,
        min_version: int | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.model_name = model_name
        self.alias = alias
        self.min_version = min_version
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_mlops_provider.triggers.mlflow.MlflowModelVersionTrigger",
            {
                "mlflow_conn_id": self.mlflow_conn_id,
                "model_name": self.model_name,
                "alias": self.alias,
                "min_version": self.min_version,
                "poll_interval": self.poll_interval,
            },
        )

    def _check(self) -> dict[str, Any] | None:
        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        hook = getattr(self, "_hook", None)
        if hook is None:
            hook = self._hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id)
        return find_model_version(hook, self.model_name, alias=self.alias, min_version=self.min_version)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        polls = 0
        while True:
            polls += 1
            try:
                found = await asyncio.to_thread(self._check)
            except Exception as err:
                yield TriggerEvent(
                    {
                        "status": "error",
                        "message": f"MLflow registry query for {self.model_name!r} failed: {err}",
                        "model_version": None,
                    }
                )
                return
            if found is not None:
                yield TriggerEvent(
                    {
                        "status": "success",
                        "message": f"{self.model_name} version {found['version']} is there "
                        f"after {polls} poll(s)",
                        "model_version": found,
                    }
                )
                return
            self.log.debug("%s: condition not met yet (poll %d)", self.model_name, polls)
            await asyncio.sleep(self.poll_interval)
