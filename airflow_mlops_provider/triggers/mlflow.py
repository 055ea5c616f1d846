"""MlflowModelVersionTrigger: wait, in the triggerer, for a model version or an alias move."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops_provider.triggers._retry import call_in_thread_with_retries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_mlops_provider.hooks.mlflow import MlflowHook


def find_model_version(
    hook: MlflowHook, model_name: str, *, alias: str | None = None, min_version: int | None = None
) -> dict[str, Any] | None:
    """``hook.find_model_version(...)``; kept here for code that imported it from this module."""
    return hook.find_model_version(model_name, alias=alias, min_version=min_version)


class MlflowModelVersionTrigger(BaseTrigger):
    """
    Poll the MLflow registry until a model version appears or an alias moves.

    The blocking MLflow client runs in a worker thread, so the triggerer's event loop never
    blocks. A transient error (no answer, a timeout, HTTP 429 or 5xx: the hook's
    ``is_transient_error``) is retried with back-off; any other error ends the wait at once.
    Yields one event:
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

    def _check(self, hook: MlflowHook) -> dict[str, Any] | None:
        return hook.find_model_version(self.model_name, alias=self.alias, min_version=self.min_version)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id)
        polls = 0
        while True:
            polls += 1
            try:
                found = await call_in_thread_with_retries(
                    self._check,
                    hook,
                    is_transient=hook.is_transient_error,
                    log=self.log,
                    what=f"MLflow registry query for {self.model_name!r}",
                )
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
