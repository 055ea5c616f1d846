"""MlflowVersionsHook: a model version created exactly once per task instance.

A version is tagged with a hash of the task instance's identity (:data:`TI_KEY_TAG`), created
with single-attempt requests, and looked up whenever a create got no answer: the server may
have committed it, or may still be working on it (a request held past the client's timeout).
The task instance's version is its oldest; a newer one is a lost create that committed late,
and is deleted. :class:`~airflow_mlops_provider.hooks.mlflow.MlflowHook` is built on this class.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow_base import MlflowBaseHook

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["TI_KEY_TAG", "MlflowVersionsHook", "quoted"]

#: Version tag holding a hash of the task instance identity (dag_id, task_id, run_id, map_index).
TI_KEY_TAG = "airflow.ti_key"


def quoted(name: str) -> str:
    """``name`` with its single quotes escaped, for ``name = '...'`` in a version search."""
    return name.replace("'", "\\'")


class MlflowVersionsHook(MlflowBaseHook):
    """
    Create a model version once per task instance, and find it again.

    :param mlflow_conn_id: The Airflow connection of type ``mlflow``.
    """

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
            f"name = '{quoted(model_name)}' AND tags.`{TI_KEY_TAG}` = '{ti_key}'"
        )
        return sorted(found, key=lambda v: int(v.version))

    def version_of_ti(self, model_name: str, ti_key: str) -> ModelVersion | None:
        """
        The version of task instance ``ti_key``: its oldest. A newer one is a create whose answer
        was lost and that committed after a later one: it is deleted (unless an alias holds it),
        so the task instance keeps one version, the one it returned first.
        """
        found = self.versions_of_ti(model_name, ti_key)
        for stray in found[1:]:
            aliases = self.get_conn().get_model_version(model_name, stray.version).aliases
            if aliases:
                self.log.warning("Version %s of %s duplicates version %s but holds aliases %s; kept",
                                 stray.version, model_name, found[0].version, aliases)  # fmt: skip
                continue
            self.log.warning("Deleting version %s of %s: a late-committed duplicate of version %s",
                             stray.version, model_name, found[0].version)  # fmt: skip
            self.get_conn().delete_model_version(model_name, stray.version)
        return found[0] if found else None

    def create_version_once_per_ti(
        self, model_name: str, ti_key: str, *, attempts: int = 4, **create: Any
    ) -> ModelVersion:
        """
        Create a version of ``model_name`` (creating the registered model when it is missing),
        with single-attempt requests. When a request gets no answer, the server may still have
        committed it: the task instance's version is looked up before trying again, so a lost
        response never leaves two versions. A request that timed out may still be in flight:
        it is looked for during one more request timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT``)
        before it is sent again, and once one is created the oldest version of the task
        instance wins (:meth:`version_of_ti`). A lost create that commits later still than
        that is deleted by the task instance's next try, if there is one.

        :param ti_key: The task instance key the version is tagged with (in ``create["tags"]``).
        :param create: ``source``, ``run_id``, ``model_id``, ``tags``, ``description``.
        :raises ModelRegistryError: The registry refused, or kept not answering.
        """
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT
        from mlflow.exceptions import MlflowException

        created_model = False
        lost = False
        delay = 0.5
        what = f"Could not create a version of {model_name!r} from {create['source']!r}"
        for attempt in range(1, attempts + 1):
            try:
                version = self.create_model_version_once(name=model_name, **create)
            except MlflowException as err:
                answered = self.is_answer(err)
                if answered and self.is_model_missing(err) and not created_model:
                    created_model = self._registered_model_created(model_name, attempt)
                    if not created_model:
                        time.sleep(delay)
                        delay *= 2
                    continue
                if answered:
                    raise ModelRegistryError(f"{what}: {err}", model_name=model_name) from err
                lost = True
                self.log.warning(
                    "No answer to create a version of %s (attempt %d): %s", model_name, attempt, err
                )
                settle = float(MLFLOW_HTTP_REQUEST_TIMEOUT.get()) if self.is_timeout(err) else 0.0
                try:
                    found = self._await_version_of_ti(model_name, ti_key, settle)
                except MlflowException as lookup_err:
                    # Creating again could duplicate a committed version: let the task retry look.
                    raise ModelRegistryError(
                        f"{what}: no answer ({err}), and looking for a committed version failed "
                        f"too: {lookup_err}",
                        model_name=model_name,
                    ) from err
                if found is not None:
                    self.log.info("The server had committed it: version %s", found.version)
                    return found
                if attempt == attempts:
                    raise ModelRegistryError(f"{what}: {err}", model_name=model_name) from err
                time.sleep(delay)
                delay *= 2
            else:
                if not lost:
                    return version
                try:  # a lost create may have committed meanwhile: the oldest wins
                    return self.version_of_ti(model_name, ti_key) or version
                except MlflowException as err:
                    raise ModelRegistryError(
                        f"Created version {version.version} of {model_name!r} after a lost create, "
                        f"but could not look for the lost one: {err}",
                        model_name=model_name,
                        version=version.version,
                    ) from err
        raise ModelRegistryError(f"Could not create a version of {model_name!r}", model_name=model_name)

    def _registered_model_created(self, model_name: str, attempt: int) -> bool:
        """
        Create the missing registered model: True once it exists, False when the request got
        no answer or a transient one (creating it again is safe: it exists, or it is created).
        """
        from mlflow.exceptions import MlflowException

        try:
            self.ensure_registered_model(model_name)
        except MlflowException as err:
            if self.is_answer(err) and not self.is_transient_error(err):
                raise
            self.log.warning(
                "No answer to create registered model %s (attempt %d): %s", model_name, attempt, err
            )
            return False
        return True

    def _await_version_of_ti(self, model_name: str, ti_key: str, settle: float) -> ModelVersion | None:
        """Look for the task instance's version, again every second for ``settle`` seconds."""
        deadline = time.monotonic() + settle
        if settle > 0:
            self.log.info("Looking for up to %.0f s for a create that may still be in flight", settle)
        while True:
            found = self.version_of_ti(model_name, ti_key)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
