"""MlflowRegisterModelOperator: register a model version, once per task instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.links.mlflow import push_mlflow_urls
from airflow_mlops_provider.operators._common import contains_template
from airflow_mlops_provider.operators.mlflow_common import (
    TI_KEY_TAG,
    MlflowRegistryBaseOperator,
    emit_model_event,
    ti_identity_tags,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = ["MlflowRegisterModelOperator"]


class MlflowRegisterModelOperator(MlflowRegistryBaseOperator):
    """
    Register a model version, creating the registered model when it is missing.

    Idempotent: the version is tagged with the task instance's identity (dag_id, task_id, run_id,
    map_index) and looked up before creating, so a retry or rerun returns the version created
    before. A create whose answer was lost is looked for before it is sent again (see
    :meth:`~airflow_mlops_provider.hooks.mlflow_versions.MlflowVersionsHook.create_version_once_per_ti`);
    one that commits late anyway is deleted: the task instance keeps its oldest version.
    Returns ``{"name", "version", "run_id", "source"}``.

    :param model_name: Registered model name. (templated)
    :param source: Model source URI (``models:/m-...``, ``runs:/...``, ``s3://...``). (templated)
    :param run_id: MLflow run that produced the model; with ``artifact_path``, the model logged
        under that name in the run. (templated)
    :param artifact_path: Name the model was logged under in ``run_id``. (templated)
    :param model_id: MLflow 3 logged model id (``m-...``). (templated)
    :param tags: Extra version tags. (templated)
    :param description: Version description. (templated)
    :param alias: Alias to point at the new version, if any. (templated)
    :param await_ready: Wait until the version's status is READY.
    :param await_timeout: Seconds to wait for READY.
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>``.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = (
        "model_name", "source", "run_id", "artifact_path", "model_id", "tags", "description", "alias",
    )  # fmt: skip

    def __init__(
        self,
        *,
        model_name: str,
        source: str | None = None,
        run_id: str | None = None,
        artifact_path: str | None = None,
        model_id: str | None = None,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        await_ready: bool = True,
        await_timeout: float = 300,
        alias: str | None = None,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        if not (isinstance(await_timeout, (int, float)) and await_timeout > 0):
            raise ValueError(f"await_timeout must be a positive number of seconds, got {await_timeout!r}")
        if tags is not None and not isinstance(tags, Mapping) and not contains_template(tags):
            raise ValueError(f"tags must be a mapping, got {tags!r}")
        if source is None and model_id is None and run_id is None:
            raise ValueError("give source, run_id with artifact_path, or model_id; got none of them")
        if run_id is not None and source is None and model_id is None and artifact_path is None:
            raise ValueError(f"run_id={run_id!r} needs artifact_path (or give source or model_id)")
        self.model_name = model_name
        self.source = source
        self.run_id = run_id
        self.artifact_path = artifact_path
        self.model_id = model_id
        self.tags = tags
        self.description = description
        self.await_ready = await_ready
        self.await_timeout = await_timeout
        self.alias = alias

    def execute(self, context: Context) -> dict[str, Any]:
        name = self.required_text("model_name")
        if self.tags is not None and not isinstance(self.tags, Mapping):
            raise AirflowFailException(f"tags must be a mapping, got {self.tags!r}")
        if self.run_id is not None and not self.source and not self.model_id and not self.artifact_path:
            raise AirflowFailException(f"run_id={self.run_id!r} needs artifact_path")
        hook = self.hook
        identity = ti_identity_tags(context)
        ti_key = identity[TI_KEY_TAG]

        # A first try cannot have registered anything yet; a retry or a cleared task looks first.
        try_number = getattr(context["ti"], "try_number", None)
        existing = hook.version_of_ti(name, ti_key) if try_number != 1 else None
        created = existing is None
        if existing is not None:
            version = existing
            self.log.info("Task instance already registered %s version %s; reusing it", name, version.version)
        else:
            source, run_id, model_id = hook.resolve_model_source(
                source=str(self.source) if self.source else None,
                run_id=self.run_id,
                model_id=self.model_id,
                artifact_path=self.artifact_path,
            )
            tags = {**{str(k): str(v) for k, v in (self.tags or {}).items()}, **identity}
            self.log.info("Registering %s from %s", name, source)
            version = hook.create_version_once_per_ti(
                name,
                ti_key,
                source=source,
                run_id=run_id,
                model_id=model_id,
                tags=tags,
                description=self.description,
            )
        if self.await_ready and version.status != "READY":
            version = hook.wait_until_ready(name, str(version.version), self.await_timeout)
        if self.alias:
            hook.set_alias(name, str(self.alias), str(version.version))
            self.log.info("Alias %r of %s now points at version %s", self.alias, name, version.version)

        result = {
            "name": name,
            "version": str(version.version),
            "run_id": version.run_id,
            "source": version.source,
        }
        push_mlflow_urls(
            context,
            run_id=version.run_id or "",
            model_version=hook.model_version_url(name, version.version),
        )
        if self.emit_asset_event:
            event = {"event": "registered", "created": created, **result}
            event["model_name"] = event.pop("name")
            if self.alias:
                event["alias"] = str(self.alias)
            emit_model_event(context, name, self.outlets, event)
        return result
