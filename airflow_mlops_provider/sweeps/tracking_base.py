"""The connection, the failure policy and the MLflow calls under :class:`~airflow_mlops_provider.sweeps.tracking.SweepTracker`.

Failure policy. ``tracking="required"`` (the default): an MLflow call that gets no answer (or a
429/5xx) is tried :data:`ATTEMPTS` times (tenacity, on
:func:`~airflow_mlops_provider.hooks.mlflow_errors.is_transient_error`), then the task fails
with a plain ``AirflowException`` naming the tracking URI (never credentials), which Airflow
retries; any other refusal is an ``AirflowFailException``. ``tracking="best_effort"``: any
MLflow error logs one warning and turns tracking off for the rest of the task. Configuration
errors (an experiment name MLflow refuses, a deleted experiment, an ``mlflow_conn_id`` given but
not defined) fail in both modes. When the default ``mlflow_default`` connection is not defined,
tracking is off (logged at INFO).

Note that MLflow's own HTTP client retries a request that gets no answer before these tries
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, with back-off).
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from airflow_mlops_provider.sweeps import tracking_store as store

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mlflow import MlflowClient
    from mlflow.entities import Run

    from airflow_mlops_provider.hooks.mlflow import MlflowHook
    from airflow_mlops_provider.sweeps.tracking import TrackingConfig

__all__ = ["ATTEMPTS", "DEFAULT_CONN_ID", "TrackerBase"]

DEFAULT_CONN_ID = "mlflow_default"
#: Tries of one MLflow call that gets no answer, before the policy applies (waits 0.5, 1 s).
ATTEMPTS = 3


class _TrackingOff(Exception):
    """Tracking is off for this task (the default connection is not defined)."""


def _is_mlflow_error(err: BaseException) -> bool:
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(err, (MlflowException, requests.RequestException, OSError))


class TrackerBase:
    """
    The hook of a sweep's connection (built on first use), the failure policy and MLflow calls.

    :param config: The sweep's tracking config.
    :param log: The task's logger (default this module's).
    """

    def __init__(self, config: TrackingConfig, *, log: logging.Logger | Any = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("airflow_mlops_provider.sweeps.tracking")
        self._enabled = True

    @property
    def enabled(self) -> bool:
        """False once tracking is off (a ``best_effort`` failure, or no default connection)."""
        return self._enabled

    @cached_property
    def hook(self) -> MlflowHook:
        """The :class:`~airflow_mlops_provider.hooks.mlflow.MlflowHook` of the connection."""
        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.config.mlflow_conn_id)

    # -- policy ------------------------------------------------------------------------------

    def _guarded(self, what: str, fn: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        if not self._enabled:
            return default
        try:
            return fn(*args)
        except _TrackingOff as off:
            self._enabled = False
            self.log.info("MLflow tracking is off: %s", off)
            return default
        except AirflowFailException:
            raise
        except Exception as err:
            if not _is_mlflow_error(err):
                raise
            if self.config.tracking == "best_effort":
                self._enabled = False
                self.log.warning(
                    "MLflow tracking is off for the rest of this task: could not %s at %s (%s); "
                    "tracking='best_effort' goes on without it",
                    what,
                    self._uri(),
                    self._describe(err),
                )
                return default
            if self.hook.is_transient_error(err):
                raise AirflowException(
                    f"MLflow tracking server {self._uri()} did not answer when trying to {what} "
                    f"({ATTEMPTS} tries): {self._describe(err)}. tracking='required' fails the task, "
                    "and Airflow retries it; tracking='best_effort' goes on without MLflow."
                ) from err
            raise AirflowFailException(
                f"MLflow at {self._uri()} refused to {what}: {self._describe(err)}"
            ) from err

    def _retry(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def report(state: Any) -> None:
            err = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "MLflow call to %s failed (try %d of %d), retrying: %s",
                what,
                state.attempt_number,
                ATTEMPTS,
                self._describe(err),
            )

        for attempt in Retrying(
            retry=retry_if_exception(self.hook.is_transient_error),
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4),
            before_sleep=report,
            reraise=True,
        ):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _client(self) -> MlflowClient:
        try:
            return self.hook.get_conn()
        except AirflowNotFoundException as err:
            conn_id = self.config.mlflow_conn_id
            if conn_id == DEFAULT_CONN_ID:
                raise _TrackingOff(
                    f"the default connection {conn_id!r} is not defined (pass mlflow_conn_id=None "
                    "to say so, or define it to track the sweep)"
                ) from err
            raise AirflowFailException(
                f"mlflow_conn_id {conn_id!r} is not defined: create an Airflow connection of type "
                "'mlflow' with that id, or pass mlflow_conn_id=None to run the sweep untracked"
            ) from err

    def _parent(self) -> tuple[MlflowClient, str, str]:
        if not self.config.parent_run_id:
            raise AirflowFailException(
                "the sweep has no MLflow run: call SweepTracker.start_sweep first (TrackingConfig.parent_run_id is None)"
            )
        client = self._client()
        return client, self._experiment_id(client), self.config.parent_run_id

    def _uri(self) -> str:
        try:
            return store.safe_uri(self.hook.tracking_uri)
        except Exception:
            return f"<connection {self.config.mlflow_conn_id!r}>"

    def _describe(self, err: BaseException | None) -> str:
        text = f"{type(err).__name__}: {err}"
        try:
            secret = self.hook._settings.get("secret")
            uri = self.hook.tracking_uri
        except Exception:
            secret, uri = None, ""
        if uri:
            text = text.replace(uri, store.safe_uri(uri))
        if secret:
            text = text.replace(secret, "***")
        return store.truncated(text, 600)[0]

    # -- MLflow calls -----------------------------------------------------------------------

    def _experiment_id(self, client: MlflowClient) -> str:
        if self.config.experiment_id:
            return self.config.experiment_id
        from mlflow.exceptions import MlflowException

        name = self.config.experiment_name
        if not isinstance(name, str) or not name:
            raise AirflowFailException(
                f"experiment_name {name!r} is refused by MLflow: an experiment name is a non-empty string"
            )
        for _ in range(2):
            experiment = self._retry(f"find experiment {name!r}", client.get_experiment_by_name, name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise AirflowFailException(
                        f"experiment_name {name!r} is refused by MLflow: experiment "
                        f"{experiment.experiment_id} of that name is deleted; restore it (mlflow "
                        f"experiments restore --experiment-id {experiment.experiment_id}), remove it "
                        "for good (mlflow gc), or choose another experiment_name"
                    )
                return str(experiment.experiment_id)
            try:
                created = str(self._retry(f"create experiment {name!r}", client.create_experiment, name))
            except MlflowException as err:
                if self.hook.is_already_exists(err):
                    continue  # created meanwhile, or deleted: look again
                if self.hook.is_transient_error(err):
                    raise
                raise AirflowFailException(
                    f"experiment_name {name!r} is refused by MLflow at {self._uri()}: {self._describe(err)}"
                ) from err
            self.log.info("Created MLflow experiment %r (id %s)", name, created)
            return created
        raise AirflowFailException(f"experiment_name {name!r}: MLflow says it exists but cannot find it")

    def _search(
        self, experiment_id: str, tags: Mapping[str, str], what: str, *, newest_first: bool = False
    ) -> list[Run]:
        order = "DESC" if newest_first else "ASC"
        try:
            runs = self._retry(
                what,
                self.hook.search_runs_by_tags,
                [experiment_id],
                tags,
                order_by=[f"attributes.start_time {order}"],
            )
        except ValueError as err:
            raise AirflowFailException(f"cannot {what}: {err}") from err
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id), reverse=newest_first)

    def _find_or_create(
        self, experiment_id: str, key: Mapping[str, str], tags: Mapping[str, str], name: str, what: str
    ) -> tuple[Run, bool]:
        """The oldest run tagged ``key``, else a new one with ``tags``; and whether it is new."""
        found = self._search(experiment_id, key, what)
        if found:
            return found[0], False
        client = self._client()
        created = self._retry(what, client.create_run, experiment_id, tags=dict(tags), run_name=name[:250])
        # A create whose answer was lost and was sent again, or a concurrent try: keep the oldest.
        again = self._search(experiment_id, key, what)
        for extra in again[1:]:
            self.log.warning(
                "Deleting duplicate MLflow run %s (kept %s)", extra.info.run_id, again[0].info.run_id
            )
            self._retry(what, client.delete_run, extra.info.run_id)
        if again and again[0].info.run_id != created.info.run_id:
            return again[0], False
        return created, True

    def _reopen(self, run: Run) -> None:
        """Set a finished run RUNNING again (it is reused)."""
        if run.info.status != "RUNNING":
            run_id = run.info.run_id
            self._retry(f"restart run {run_id}", self._client().update_run, run_id, status="RUNNING")

    def _log_batch(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        param_list = [Param(k, v) for k, v in (params or {}).items()]
        tag_list = [
            RunTag(k, store.truncated(str(v), store.TAG_VALUE_LIMIT)[0]) for k, v in (tags or {}).items()
        ]
        m_chunks = list(store.chunks(metric_list, store.BATCH_METRICS - 2 * store.BATCH_PARAMS_TAGS))
        p_chunks = list(store.chunks(param_list, store.BATCH_PARAMS_TAGS))
        t_chunks = list(store.chunks(tag_list, store.BATCH_PARAMS_TAGS))
        for i in range(max(len(m_chunks), len(p_chunks), len(t_chunks))):
            batch = {
                "metrics": m_chunks[i] if i < len(m_chunks) else [],
                "params": p_chunks[i] if i < len(p_chunks) else [],
                "tags": t_chunks[i] if i < len(t_chunks) else [],
            }
            self._retry(f"log to run {run_id}", client.log_batch, run_id, **batch)

    def _read_outputs(self, run_id: str, path: str) -> Any:
        import json

        self._client()
        text = self._retry(f"download {path} of run {run_id}", self.hook.read_text_artifact, run_id, path)
        return json.loads(text)
