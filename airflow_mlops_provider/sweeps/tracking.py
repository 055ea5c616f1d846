"""Every trial an MLflow run, and the trial cache: :class:`SweepTracker`.

A sweep (one DAG run) is a parent run in its experiment, found again by the tags
``airflow.dag_id``, ``airflow.run_id`` and ``mlops.sweep_task`` (the planning task), so a rerun
of the DAG run reuses it. Each trial is a child run, found again by ``mlops.parent_run_id``,
``mlops.trial_id`` and ``mlops.sweep_cache_key``: a retried or cleared task reuses its trial's
run, and a finished one is not run again. The cache is the finished trial runs tagged
``mlops.cache_key`` (the hash of the rendered ``cache_key``): one paginated search per sweep.
What a run carries is :mod:`airflow_mlops_provider.sweeps.tracking_store`.

``tracking="required"`` (the default) fails the task, which Airflow retries, when MLflow does
not answer; ``"best_effort"`` logs a warning and goes on untracked. The policy, the connection
and the MLflow calls are :mod:`airflow_mlops_provider.sweeps.tracking_base`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_mlops_provider.sweeps import tracking_store as store
from airflow_mlops_provider.sweeps.tracking_base import ATTEMPTS, DEFAULT_CONN_ID, TrackerBase

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = [
    "ATTEMPTS",
    "CACHE_MODES",
    "DEFAULT_CONN_ID",
    "TRACKING_MODES",
    "SweepTracker",
    "TrackingConfig",
    "TrialRun",
]

TRACKING_MODES = ("required", "best_effort", "off")
CACHE_MODES = ("off", "read", "readwrite")
_IDENTITY = ("dag_id", "run_id", "task_id", "map_index", "try_number")
_STALE_ON_REUSE = (
    store.TRIAL_STATUS_TAG,
    store.CACHE_KEY_TAG,
    store.FAILURE_TAG,
    store.ERROR_TAG,
    store.TAIL_TAG,
    store.OUTPUTS_TAG,
    store.OUTPUTS_ARTIFACT_TAG,
    store.METRIC_KEYS_TAG,
)


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """
    Where and how a sweep is tracked; travels in batch references and XCom (``as_dict``).

    :param mlflow_conn_id: The Airflow connection of type ``mlflow``.
    :param experiment_name: The MLflow experiment (created when missing).
    :param tracking: ``"required"`` or ``"best_effort"`` (``"off"`` builds no config).
    :param cache: ``"off"``, ``"read"`` or ``"readwrite"``.
    :param cache_key: The rendered cache key's sha256 hex[:32]; None turns the cache off.
    :param cache_key_text: The rendered key, truncated to 250 characters (for people).
    :param cache_failures: Reuse a trial's own failure (exit code, bad result) too.
    :param metric: The metric a reused result must hold.
    :param experiment_id: Filled by :meth:`SweepTracker.start_sweep`.
    :param parent_run_id: The sweep's run, filled by :meth:`SweepTracker.start_sweep`.
    :param mode: ``"min"`` or ``"max"`` for the best so far (from the sweep params when started).
    """

    mlflow_conn_id: str
    experiment_name: str
    tracking: str = "required"
    cache: str = "readwrite"
    cache_key: str | None = None
    cache_key_text: str | None = None
    cache_failures: bool = True
    metric: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mlflow_conn_id, str) or not self.mlflow_conn_id:
            raise ValueError(f"mlflow_conn_id must be a non-empty string, got {self.mlflow_conn_id!r}")
        if self.tracking not in TRACKING_MODES[:2]:
            raise ValueError(
                f"tracking must be one of {list(TRACKING_MODES[:2])} in a TrackingConfig "
                f"(tracking='off' builds none), got {self.tracking!r}"
            )
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {list(CACHE_MODES)}, got {self.cache!r}")
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None, got {self.mode!r}")

    def as_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict (for XCom)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackingConfig:
        """The config of :meth:`as_dict` (unknown keys ignored)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in dict(data).items() if key in names})


class TrialRun(NamedTuple):
    """A trial's MLflow run: its id, its status now, and its record when it had finished already."""

    run_id: str
    status: str
    record_if_done: dict[str, Any] | None


class SweepTracker(TrackerBase):
    """
    Log a sweep and its trials to MLflow, find them again, and serve the trial cache.

    The hook (and the connection) is built on first use. Methods return None or ``{}`` once
    tracking is off (:attr:`enabled` is False).

    :param config: The sweep's tracking config.
    :param log: The task's logger (default this module's).
    """

    # -- the public calls -------------------------------------------------------------------

    def start_sweep(self, identity: Mapping[str, str], params: Mapping[str, Any]) -> TrackingConfig | None:
        """
        Find or create the experiment and the sweep's run; return the config with their ids.

        :param identity: The planning task's identity (``dag_id``, ``run_id``, ``task_id``,
            ``map_index``, ``try_number``).
        :param params: Sweep settings logged once as params (space, n_trials, strategy, seed...).
        :raises AirflowFailException: The experiment name is refused, or its experiment deleted.
        """
        return self._guarded("start the sweep's run", self._start_sweep, identity, params)

    def cached_results(self, trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Return ``{trial_id: record}`` of the ``trials`` the cache holds (one paginated search)."""
        found: dict[str, dict[str, Any]] = self._guarded(
            "look up cached trials", self._cached, trials, default={}
        )
        return found

    def trial_run(self, trial: Mapping[str, Any], identity: Mapping[str, str]) -> TrialRun | None:
        """Find (a retried or cleared task) or create the run of ``trial`` in this sweep."""
        what = f"find or create the run of trial {trial.get('trial_id')}"
        run: TrialRun | None = self._guarded(what, self._trial_run, trial, identity)
        return run

    def finish_trial(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Log a trial's outcome (metrics or error, the cache entry) and end its run."""
        self._guarded(
            f"finish the run {run_id} of trial {record.get('trial_id')}", self._finish, run_id, record
        )

    def progress(self) -> dict[str, Any] | None:
        """The sweep's trial runs so far: ``{"done", "failed", "running", "best": (trial_id, value)}``."""
        counts: dict[str, Any] | None = self._guarded("read the sweep's progress", self._progress)
        return counts

    def log_leaderboard(self, result: Mapping[str, Any], *, succeeded: bool = True) -> None:
        """
        Log ``leaderboard.json`` and ``leaderboard.csv`` and the best trial on the sweep's run, and end it.

        :param result: What ``select_best`` returned (or ``{"error", "metric", "mode"}``).
        :param succeeded: False ends the sweep's run FAILED.
        """
        self._guarded("log the leaderboard", self._leaderboard, result, succeeded)

    def container_env(self, run_id: str) -> dict[str, str]:
        """``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_ID`` for a trial (no credentials)."""
        env: dict[str, str] = self._guarded("read the tracking URI", self._container_env, run_id, default={})
        return env

    # -- the work of each public call -------------------------------------------------------

    def _start_sweep(self, identity: Mapping[str, str], params: Mapping[str, Any]) -> TrackingConfig:
        client = self._client()
        experiment_id = self._experiment_id(client)
        dag_id, run_id = str(identity.get("dag_id", "")), str(identity.get("run_id", ""))
        map_index = str(identity.get("map_index", "-1"))
        sweep_task = str(identity.get("task_id", ""))
        if map_index not in ("-1", ""):
            sweep_task += f"[{map_index}]"
        key = {"airflow.dag_id": dag_id, "airflow.run_id": run_id, store.SWEEP_TASK_TAG: sweep_task}
        tags = {**key, "airflow.task_id": str(identity.get("task_id", "")), store.KIND_TAG: "sweep"}
        what = f"find or create the run of sweep {dag_id}/{run_id}"
        run, created = self._find_or_create(experiment_id, key, tags, f"sweep-{run_id}", what)
        parent = run.info.run_id
        if not created:
            self.log.info("Reusing the MLflow run %s of this sweep (a rerun of DAG run %s)", parent, run_id)
            self._reopen(run)
        values, cut = store.param_values(params)
        existing = run.data.params
        changed = {k: v for k, v in values.items() if k in existing and existing[k] != v}
        if changed:
            self.log.info(
                "Sweep params changed since the run was made (kept as tags mlops.param.*): %s",
                sorted(changed),
            )
        self._log_batch(
            client,
            parent,
            params={k: v for k, v in values.items() if k not in existing},
            tags={f"mlops.param.{k}"[: store.KEY_LIMIT]: v for k, v in changed.items()}
            | ({store.TRUNCATED_TAG: ",".join(cut)} if cut else {}),
        )
        mode = params.get("mode") if params.get("mode") in ("min", "max") else self.config.mode
        self.config = dataclasses.replace(
            self.config, experiment_id=experiment_id, parent_run_id=parent, mode=mode
        )
        url = store.safe_uri(self.hook.run_url(experiment_id, parent))
        self.log.info(
            "Sweep tracked in MLflow experiment %r, run %s %s", self.config.experiment_name, parent, url
        )
        return self.config

    def _cached(self, trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        cfg = self.config
        if cfg.cache == "off" or not cfg.cache_key or not trials:
            return {}
        experiment_id = self._experiment_id(self._client())
        runs = self._search(
            experiment_id, {store.CACHE_KEY_TAG: cfg.cache_key}, "look up cached trials", newest_first=True
        )
        wanted = {str(t["trial_id"]): t for t in trials}
        seen: set[str] = set()
        found: dict[str, dict[str, Any]] = {}
        for run in runs:
            trial_id = run.data.tags.get(store.TRIAL_ID_TAG)
            if trial_id not in wanted or trial_id in seen:
                continue
            seen.add(trial_id)
            outcome, why = self._outcome(run, wanted[trial_id])
            if outcome is None:
                self.log.info("cache miss: %s (trial %s)", why, trial_id)
                continue
            found[trial_id] = store.cached_record(wanted[trial_id], outcome, run.info.run_id)
        self.log.info(
            "Trial cache %r: %d of %d trials found in MLflow (%d runs with this key)",
            cfg.cache_key_text or cfg.cache_key,
            len(found),
            len(wanted),
            len(runs),
        )
        return found

    def _trial_run(self, trial: Mapping[str, Any], identity: Mapping[str, str]) -> TrialRun:
        cfg = self.config
        client, experiment_id, parent = self._parent()
        trial_id = str(trial["trial_id"])
        key = {
            store.PARENT_TAG: parent,
            store.TRIAL_ID_TAG: trial_id,
            store.SWEEP_CACHE_KEY_TAG: cfg.cache_key or "off",
        }
        who = {f"airflow.{name}": str(identity.get(name, "")) for name in _IDENTITY}
        tags = {**key, **who, "mlflow.parentRunId": parent, store.KIND_TAG: "trial"}
        what = f"find or create the run of trial {trial_id}"
        run, created = self._find_or_create(experiment_id, key, tags, f"trial-{trial_id}", what)
        run_id = run.info.run_id
        params, cut = store.param_values(trial.get("hparams") or {})
        resources, cut_resources = store.param_values(trial.get("resources") or {}, prefix="resources.")
        cut += cut_resources
        for name in cut:
            self.log.warning(
                "Trial %s: param %s is longer than MLflow keeps; logged truncated", trial_id, name
            )
        missing = {k: v for k, v in (params | resources).items() if k not in run.data.params}
        extra_tags = {store.TRUNCATED_TAG: ",".join(cut)} if cut else {}
        if created:
            self._log_batch(client, run_id, params=missing, tags=extra_tags)
            return TrialRun(run_id, "RUNNING", None)
        done, why = self._outcome(run, trial)
        if done is not None and cfg.cache != "off":
            return TrialRun(run_id, run.info.status, done)
        self.log.info(
            "Trial %s: reusing its MLflow run %s (%s)", trial_id, run_id, why or "run again, cache='off'"
        )
        for stale in _STALE_ON_REUSE:
            if stale in run.data.tags:
                self._retry(f"clear tag {stale} of run {run_id}", client.delete_tag, run_id, stale)
        self._log_batch(client, run_id, params=missing, tags=who | extra_tags)
        self._reopen(run)
        return TrialRun(run_id, "RUNNING", done)

    def _outcome(self, run: Any, trial: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """A finished trial's outcome from its run (its rung's, for a halving trial), or why not."""
        cfg = self.config
        if trial.get("rung") is not None:
            return store.rung_outcome(run, trial, metric=cfg.metric, cache_failures=cfg.cache_failures)
        return store.outcome_of_run(
            run, metric=cfg.metric, cache_failures=cfg.cache_failures, outputs=self._read_outputs
        )

    def _finish(self, run_id: str, record: Mapping[str, Any]) -> None:
        cfg = self.config
        client = self._client()
        metrics, tags, outputs, status = store.finish_payload(
            record,
            cache_key=cfg.cache_key,
            cache_key_text=cfg.cache_key_text,
            write_cache=cfg.cache == "readwrite",
        )
        if outputs is not None:
            self._retry(
                f"log outputs of run {run_id}",
                self.hook.log_text_artifact,
                run_id,
                outputs,
                store.OUTPUTS_ARTIFACT,
            )
        tags |= store.rung_tag(record)
        if record.get("budget") is not None:
            metrics[store.BUDGET_METRIC] = float(record["budget"])
        step = int(record.get("rung") or 0)  # a halving trial's metric per rung
        self._log_batch(client, run_id, metrics=metrics, tags=tags, step=step)
        self._retry(f"end run {run_id}", client.set_terminated, run_id, status)

    def _progress(self) -> dict[str, Any]:
        cfg = self.config
        _, experiment_id, parent = self._parent()
        key = {store.PARENT_TAG: parent, store.SWEEP_CACHE_KEY_TAG: cfg.cache_key or "off"}
        runs = self._search(experiment_id, key, "read the sweep's progress")
        metric = store.sanitized_key(cfg.metric) if cfg.metric else None
        sign = -1.0 if cfg.mode == "max" else 1.0
        done = failed = running = 0
        best: tuple[str, float] | None = None
        for run in runs:
            status = run.info.status
            if status in ("RUNNING", "SCHEDULED"):
                running += 1
                continue
            done += 1
            if status != "FINISHED":
                failed += 1
                continue
            value = run.data.metrics.get(metric) if metric else None
            if value is not None and (best is None or sign * value < sign * best[1]):
                best = (run.data.tags.get(store.TRIAL_ID_TAG, run.info.run_id), float(value))
        return {"done": done, "failed": failed, "running": running, "best": best}

    def _leaderboard(self, result: Mapping[str, Any], succeeded: bool) -> None:
        client, experiment_id, parent = self._parent()
        if result.get("leaderboard") is not None:
            self._retry(
                "log leaderboard.json",
                self.hook.log_text_artifact,
                parent,
                store.leaderboard_json(result),
                "leaderboard.json",
            )
            self._retry(
                "log leaderboard.csv",
                self.hook.log_text_artifact,
                parent,
                store.leaderboard_csv(result),
                "leaderboard.csv",
            )
        metrics: dict[str, float] = {}
        tags = {"mlops.sweep_status": "success" if succeeded else "failed"}
        best, metric = result.get("best") or {}, result.get("metric")
        value = (best.get("metrics") or {}).get(metric) if metric else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[store.sanitized_key(f"best_{metric}")] = float(value)
        if best.get("trial_id"):
            tags["best_trial_id"] = str(best["trial_id"])
        if best.get("mlflow_run_id"):
            tags["mlops.best_run_id"] = str(best["mlflow_run_id"])
        for name in ("n_trials", "n_succeeded", "n_failed", "n_cached"):
            count = result.get(name)
            if isinstance(count, int) and not isinstance(count, bool):
                metrics[name] = float(count)
        if not succeeded:
            tags["mlops.sweep_error"] = store.truncated(str(result.get("error") or ""), store.ERROR_LIMIT)[0]
        self._log_batch(client, parent, metrics=metrics, tags=tags)
        self._retry(f"end run {parent}", client.set_terminated, parent, "FINISHED" if succeeded else "FAILED")
        self.log.info(
            "Leaderboard logged to the sweep's MLflow run %s %s",
            parent,
            store.safe_uri(self.hook.run_url(experiment_id, parent)),
        )

    def _container_env(self, run_id: str) -> dict[str, str]:
        self._client()
        env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": store.safe_uri(self.hook.tracking_uri)}
        if self.config.experiment_id:
            env["MLFLOW_EXPERIMENT_ID"] = str(self.config.experiment_id)
        return env
