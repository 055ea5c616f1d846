"""MlflowHook: the MLflow model registry as the operators, the sensor and the trigger use it.

Finding a version, creating one exactly once per task instance, waiting until it is READY,
reading a version's metrics, reading and moving aliases. The connection, the client and the
meaning of MLflow's errors are in :mod:`airflow_mlops_provider.hooks.mlflow_base`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow_base import MlflowBaseHook

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["TI_KEY_TAG", "MlflowHook", "VersionMetrics"]

#: Version tag holding a hash of the task instance identity (dag_id, task_id, run_id, map_index).
TI_KEY_TAG = "airflow.ti_key"


class VersionMetrics(NamedTuple):
    """A model version's metrics: its run's, then its logged model's for keys the run lacks."""

    run_id: str | None
    metrics: dict[str, float]


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


class MlflowHook(MlflowBaseHook):
    """
    Interact with an MLflow tracking server and model registry through ``MlflowClient``.

    The connection is read, and the client built, on first use (never in ``__init__``).

    :param mlflow_conn_id: The Airflow connection of type ``mlflow``.
    """

    def find_model_version(
        self, model_name: str, *, alias: str | None = None, min_version: int | None = None
    ) -> dict[str, Any] | None:
        """
        Return ``{"name", "version", "alias", "run_id"}`` once the condition holds, else ``None``.

        - ``alias`` alone: the alias points at some version;
        - ``alias`` and ``min_version``: the alias points at a version ``>= min_version``;
        - ``min_version`` alone: a version ``>= min_version`` exists.

        A registered model that does not exist yet counts as "not yet".
        """
        from mlflow.exceptions import MlflowException

        client = self.get_conn()
        try:
            if alias:
                mv = client.get_model_version_by_alias(model_name, alias)
            else:
                found = client.search_model_versions(
                    f"name = '{_quoted(model_name)}'", max_results=1, order_by=["version_number DESC"]
                )
                if not found:
                    return None
                mv = found[0]
        except MlflowException as err:
            if self.is_not_found(err):
                return None
            raise
        if min_version is not None and int(mv.version) < int(min_version):
            return None
        return {"name": model_name, "version": str(mv.version), "alias": alias, "run_id": mv.run_id}

    def alias_version(self, model_name: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None when the alias (or the model) is not there."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.get_conn().get_model_version_by_alias(model_name, alias).version)
        except MlflowException as err:
            if self.is_not_found(err):
                return None
            raise

    def set_alias(self, model_name: str, alias: str, version: str | int) -> None:
        """Point ``alias`` of ``model_name`` at ``version``."""
        self.get_conn().set_registered_model_alias(model_name, alias, str(version))

    def set_version_tags(self, model_name: str, version: str | int, tags: dict[str, str]) -> None:
        """Set ``tags`` on a model version, one call per tag."""
        client = self.get_conn()
        for key, value in tags.items():
            client.set_model_version_tag(model_name, str(version), key, value)

    def ensure_registered_model(self, model_name: str) -> bool:
        """Create the registered model unless it exists; True when this call created it."""
        from mlflow.exceptions import MlflowException

        try:
            self.get_conn().create_registered_model(model_name)
        except MlflowException as err:  # created meanwhile by another task
            if self.is_already_exists(err):
                return False
            raise
        self.log.info("Created registered model %s", model_name)
        return True

    def versions_of_ti(self, model_name: str, ti_key: str) -> list[ModelVersion]:
        """The versions of ``model_name`` tagged with task instance key ``ti_key``, oldest first."""
        found = self.get_conn().search_model_versions(
            f"name = '{_quoted(model_name)}' AND tags.`{TI_KEY_TAG}` = '{ti_key}'"
        )
        return sorted(found, key=lambda v: int(v.version))

    def resolve_model_source(
        self,
        *,
        source: str | None,
        run_id: str | None,
        model_id: str | None,
        artifact_path: str | None,
    ) -> tuple[str, str | None, str | None]:
        """
        Return ``(source, run_id, model_id)`` to register, from any of: a source URI, a logged
        model id (MLflow 3), or a run and the name the model was logged under in it.
        """
        client = self.get_conn()
        run_id = run_id or None
        model_id = model_id or None
        if source:
            if model_id is None and source.startswith("models:/m-"):
                # MLflow 3 requires the logged model's id next to a models:/<model_id> source.
                model_id = source.removeprefix("models:/").split("/", 1)[0]
            if model_id and run_id is None:
                run_id = client.get_logged_model(model_id).source_run_id
            return source, run_id, model_id
        if model_id:
            if run_id is None:
                run_id = client.get_logged_model(model_id).source_run_id
            return f"models:/{model_id}", run_id, model_id
        if run_id is None:
            raise AirflowFailException(
                f"nothing to register: source={source!r}, model_id={model_id!r} and run_id={run_id!r}"
            )
        run = client.get_run(run_id)
        for output in getattr(run.outputs, "model_outputs", None) or []:
            logged = client.get_logged_model(output.model_id)
            if logged.name == artifact_path:
                return f"models:/{logged.model_id}", run_id, logged.model_id
        return f"runs:/{run_id}/{artifact_path}", run_id, None

    def create_version_once_per_ti(
        self, model_name: str, ti_key: str, *, attempts: int = 4, **create: Any
    ) -> ModelVersion:
        """
        Create a version of ``model_name`` (creating the registered model when it is missing),
        with single-attempt requests. When a request gets no answer, the server may still have
        committed it: the task instance's version is looked up before trying again, so a lost
        response never leaves two versions.

        :param ti_key: The task instance key the version is tagged with (in ``create["tags"]``).
        :param create: ``source``, ``run_id``, ``model_id``, ``tags``, ``description``.
        :raises ModelRegistryError: The registry refused, or kept not answering.
        """
        from mlflow.exceptions import MlflowException

        created_model = False
        delay = 0.5
        what = f"Could not create a version of {model_name!r} from {create['source']!r}"
        for attempt in range(1, attempts + 1):
            try:
                return self.create_model_version_once(name=model_name, **create)
            except MlflowException as err:
                answered = self.is_answer(err)
                if answered and self.is_model_missing(err) and not created_model:
                    self.ensure_registered_model(model_name)
                    created_model = True
                    continue
                if answered:
                    raise ModelRegistryError(f"{what}: {err}", model_name=model_name) from err
                self.log.warning(
                    "No answer to create a version of %s (attempt %d): %s", model_name, attempt, err
                )
                try:
                    found = self.versions_of_ti(model_name, ti_key)
                except MlflowException as lookup_err:
                    # Creating again could duplicate a committed version: let the task retry look.
                    raise ModelRegistryError(
                        f"{what}: no answer ({err}), and looking for a committed version failed "
                        f"too: {lookup_err}",
                        model_name=model_name,
                    ) from err
                if found:
                    self.log.info("The server had committed it: version %s", found[0].version)
                    return found[0]
                if attempt == attempts:
                    raise ModelRegistryError(f"{what}: {err}", model_name=model_name) from err
                time.sleep(delay)
                delay *= 2
        raise ModelRegistryError(f"Could not create a version of {model_name!r}", model_name=model_name)

    def wait_until_ready(self, model_name: str, version: str, timeout: float) -> ModelVersion:
        """
        Poll the version until its status is READY.

        :raises ModelRegistryError: FAILED_REGISTRATION, or not READY after ``timeout`` seconds.
        """
        client = self.get_conn()
        deadline = time.monotonic() + float(timeout)
        delay = 0.2
        while True:
            current = client.get_model_version(model_name, version)
            if current.status == "READY":
                return current
            if current.status == "FAILED_REGISTRATION":
                raise ModelRegistryError(
                    f"Version {version} of {model_name!r} failed registration: {current.status_message}",
                    model_name=model_name,
                    version=version,
                )
            if time.monotonic() > deadline:
                raise ModelRegistryError(
                    f"Version {version} of {model_name!r} not READY after {timeout}s "
                    f"(status {current.status})",
                    model_name=model_name,
                    version=version,
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def version_metrics(self, model_name: str, version: str, *, wanted: str | None = None) -> VersionMetrics:
        """
        The metrics of a model version: its run's, and its logged model's (MLflow 3) for keys
        the run lacks (read only when the run lacks ``wanted``, if given).
        """
        client = self.get_conn()
        mv = client.get_model_version(model_name, version)
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        model_id = getattr(mv, "model_id", None)
        if (wanted is None or wanted not in metrics) and model_id:
            logged = client.get_logged_model(model_id)
            metrics = {m.key: m.value for m in (logged.metrics or [])} | metrics
        return VersionMetrics(run_id=mv.run_id, metrics=metrics)
