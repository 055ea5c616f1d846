"""MlflowModelVersionSensor: wait for a new model version or for an alias to move."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.links.mlflow import MlflowModelVersionLink, push_mlflow_urls
from airflow_mlops_provider.operators._common import contains_template
from airflow_mlops_provider.operators.mlflow_common import positive_version
from airflow_mlops_provider.triggers.mlflow import MlflowModelVersionTrigger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class MlflowModelVersionSensor(BaseSensorOperator):
    """
    Wait until a registered model has a version ``>= min_version``, or until ``alias`` is set
    (to a version ``>= min_version`` when both are given). Returns
    ``{"name", "version", "alias", "run_id"}``.

    :param model_name: Registered model name. (templated)
    :param alias: Alias to watch, e.g. ``champion``. (templated)
    :param min_version: Smallest version number that satisfies the wait. (templated)
    :param deferrable: Wait in the triggerer instead of a worker slot (default: the
        ``[operators] default_deferrable`` setting).
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "min_version")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        alias: str | None = None,
        min_version: int | str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if alias is None and min_version is None:
            raise ValueError("give alias or min_version (or both); got neither")
        if min_version is not None and not contains_template(min_version):
            positive_version(min_version, name="min_version", error=ValueError)
        self.model_name = model_name
        self.alias = alias
        self.min_version = min_version
        self.deferrable = deferrable
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        """The MlflowHook of ``mlflow_conn_id`` (built on first use, at run time)."""
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _condition(self) -> tuple[str, str | None, int | None]:
        name = str(self.model_name or "").strip()
        if not name:
            raise AirflowFailException(f"model_name must be a non-empty string, got {self.model_name!r}")
        alias = str(self.alias).strip() if self.alias not in (None, "") else None
        min_version = (
            positive_version(self.min_version, name="min_version", error=AirflowFailException)
            if self.min_version not in (None, "")
            else None
        )
        if alias is None and min_version is None:
            raise AirflowFailException("alias and min_version both rendered empty")
        return name, alias, min_version

    def poke(self, context: Context) -> PokeReturnValue:
        name, alias, min_version = self._condition()
        found = self.hook.find_model_version(name, alias=alias, min_version=min_version)
        self.log.info("%s (alias=%s, min_version=%s): %s", name, alias, min_version, found or "not yet")
        if found:
            push_mlflow_urls(context, model_version=self.hook.model_version_url(name, found["version"]))
        return PokeReturnValue(is_done=found is not None, xcom_value=found)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        name, alias, min_version = self._condition()
        self.defer(
            trigger=MlflowModelVersionTrigger(
                mlflow_conn_id=self.mlflow_conn_id,
                model_name=name,
                alias=alias,
                min_version=min_version,
                poll_interval=float(self.poke_interval),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if not event or event.get("status") != "success":
            message = (event or {}).get("message", "no event")
            raise ModelRegistryError(message, model_name=str(self.model_name))
        found = event["model_version"]
        self.log.info("%s", event.get("message"))
        push_mlflow_urls(context, model_version=self.hook.model_version_url(found["name"], found["version"]))
        return found
