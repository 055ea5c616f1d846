"""MlflowHook: the MLflow model registry as the operators, the sensor and the trigger use it.

Finding a version, waiting until it is READY, reading a version's metrics, reading and moving
aliases, a run's artifacts. Creating a version exactly once per task instance is in
:mod:`airflow_mlops_provider.hooks.mlflow_versions`; the connection, the client and the meaning
of MLflow's errors are in :mod:`airflow_mlops_provider.hooks.mlflow_base`.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider._compat import mlflow as compat
from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow_versions import TI_KEY_TAG, MlflowVersionsHook, quoted

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["SEARCH_PAGE_SIZE", "TI_KEY_TAG", "MlflowHook", "VersionMetrics", "filter_literal"]

#: Runs per page of :meth:`MlflowHook.search_runs_by_tags` (MLflow's own default page size).
SEARCH_PAGE_SIZE = 1000


class VersionMetrics(NamedTuple):
    """A model version's metrics: its run's, then its logged model's for keys the run lacks."""

    run_id: str | None
    metrics: dict[str, float]


def filter_literal(value: str) -> str:
    """
    Return ``value`` as a quoted string of an MLflow search filter (``'value'`` or ``"value"``).

    MLflow's filter parser has no escape sequence: a value holding a single quote is put in
    double quotes, and a value holding both kinds of quote, or a backslash (which the tokenizer
    reads as an escape), cannot be searched for.

    :raises ValueError: naming the value when it cannot be quoted safely.
    """
    text = str(value)
    if "\\" not in text:
        if "'" not in text:
            return f"'{text}'"
        if '"' not in text:
            return f'"{text}"'
    raise ValueError(
        f"cannot search MLflow for the value {value!r}: MLflow's filter syntax has no escapes, so a "
        "searched value can hold neither a backslash nor both a single and a double quote"
    )


class MlflowHook(MlflowVersionsHook):
    """
    Interact with an MLflow tracking server and model registry through ``MlflowClient``.

    The connection is read, and the client built, on first use (never in ``__init__``).

    :param mlflow_conn_id: The Airflow connection of type ``mlflow``.
    """

    def search_runs_by_tags(
        self,
        experiment_ids: Sequence[str],
        tags: Mapping[str, str],
        *,
        order_by: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> list[Run]:
        """
        Return every active run of ``experiment_ids`` whose tags equal ``tags``, reading all pages.

        :param experiment_ids: The experiments to search.
        :param tags: Tag key -> exact value; keys are back-quoted, values quoted with
            :func:`filter_literal`.
        :param order_by: MLflow ``order_by`` clauses, e.g. ``["attributes.start_time DESC"]``.
        :param page_size: Runs per request (default :data:`SEARCH_PAGE_SIZE`).
        :raises ValueError: A tag key holds a back quote, or a value cannot be quoted.
        """
        clauses = []
        for key, value in tags.items():
            if "`" in key:
                raise ValueError(f"cannot search MLflow for the tag key {key!r}: it holds a back quote")
            clauses.append(f"tags.`{key}` = {filter_literal(value)}")
        client = self.get_conn()
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = client.search_runs(
                list(experiment_ids),
                filter_string=" AND ".join(clauses),
                max_results=page_size or SEARCH_PAGE_SIZE,
                order_by=list(order_by) if order_by else None,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log_text_artifact(self, run_id: str, text: str, artifact_file: str) -> None:
        """
        Write ``text`` as the artifact ``artifact_file`` of run ``run_id``.

        On a tracking server that proxies artifacts (``mlflow-artifacts:``), this is one HTTP PUT
        to its artifacts API with this hook's credentials: MLflow's client (3.1 to 3.6) resolves
        such a URI against the process-wide tracking URI instead of its own, and sends only the
        credentials of the environment. Other artifact stores go through ``client.log_text``.

        :raises mlflow.exceptions.MlflowException: The server answered with an error.
        :raises requests.RequestException: No answer.
        """
        url = self._proxied_artifact_url(run_id, artifact_file)
        if url is None:
            self.get_conn().log_text(run_id, text, artifact_file)
            return
        self._artifact_request("PUT", url, data=text.encode("utf-8"))

    def read_text_artifact(self, run_id: str, artifact_file: str) -> str:
        """Return the artifact ``artifact_file`` of run ``run_id`` as text (see :meth:`log_text_artifact`)."""
        url = self._proxied_artifact_url(run_id, artifact_file)
        if url is not None:
            return self._artifact_request("GET", url).decode("utf-8")
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as tmp:
            local = self.get_conn().download_artifacts(run_id, artifact_file, tmp)
            return Path(local).read_text(encoding="utf-8")

    def _proxied_artifact_url(self, run_id: str, artifact_file: str) -> str | None:
        """The URL of a run's artifact on the server's artifacts API, None when not proxied."""
        from urllib.parse import quote, urlparse

        if not compat.is_http(self.tracking_uri):
            return None
        root = urlparse(self.get_conn().get_run(run_id).info.artifact_uri)
        if root.scheme != "mlflow-artifacts":
            return None
        # As mlflow/store/artifact/mlflow_artifacts_repo.py MlflowArtifactsRepository.resolve_uri.
        server = urlparse(self.tracking_uri)
        path = f"{server.path}/api/2.0/mlflow-artifacts/artifacts/{root.path}/{artifact_file}"
        path = re.sub("//+", "/", path)
        return f"{server.scheme}://{root.netloc or server.netloc}{quote(path)}"

    def _artifact_request(self, method: str, url: str, **kwargs: Any) -> bytes:
        import requests
        from mlflow.exceptions import MlflowException

        creds = self._credentials
        headers = {}
        auth = None
        if creds["login"]:
            auth = (creds["login"], creds["secret"] or "")
        elif creds["secret"]:
            headers["Authorization"] = f"Bearer {creds['secret']}"
        response = requests.request(
            method, url, headers=headers, auth=auth, verify=not creds["insecure"], timeout=120, **kwargs
        )
        if response.status_code >= 400:
            # Worded as mlflow/utils/rest_utils.py verify_rest_response, which mlflow_errors reads.
            raise MlflowException(
                f"API request to {url} failed with error code {response.status_code} != 200. "
                f"Response body: {response.text[:300]!r}"
            )
        return response.content

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
                    f"name = '{quoted(model_name)}'", max_results=1, order_by=["version_number DESC"]
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

    def version_tags(self, model_name: str, version: str | int) -> dict[str, str]:
        """The tags of a model version."""
        return dict(self.get_conn().get_model_version(model_name, str(version)).tags or {})

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
