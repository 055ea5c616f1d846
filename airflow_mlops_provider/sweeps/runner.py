"""Run one batch of trials: track each in MLflow, reuse finished ones, log progress a person can follow.

Both kinds of trial go through :func:`run_batch`: Python trials (``trial_task``) and container
trials (:class:`~airflow_mlops_provider.sweeps.container.ContainerTrialOperator`). They differ
only in ``run_one``, which runs one trial and returns its raw result, raising
:class:`~airflow_mlops_provider.sweeps.records.TrialFailure` when the trial itself failed.
"""

from __future__ import annotations

import inspect
import os
import time
import traceback
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_DIR_ENV
from airflow_mlops_provider.operators._common import task_identity
from airflow_mlops_provider.sweeps.records import (
    TrialFailure,
    TrialResultError,
    base_record,
    failed_record,
    split_result,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping, Sequence

    from airflow.sdk import Context

__all__ = ["python_trial_runner", "run_batch", "trials_of"]

#: Arguments a Python trial function receives when its signature names them.
EXTRA_ARGS = ("trial_id", "resources", "mlflow_run_id", "budget", "checkpoint_dir")
#: Seconds between two queries of the whole sweep's progress (one MLflow search each).
SWEEP_PROGRESS_EVERY = 10.0


def trials_of(batch: Mapping[str, Any], context: Context) -> list[dict[str, Any]]:
    """Return the trials of one batch reference from ``plan_sweep`` (pulled from its XCom)."""
    try:
        key, task_id = batch["key"], batch["task_id"]
    except (KeyError, TypeError) as err:
        raise AirflowFailException(f"batch must be a reference made by plan_sweep, got {batch!r}") from err
    value = context["ti"].xcom_pull(task_ids=task_id, key=key, map_indexes=batch.get("map_index", -1))
    if value is None:
        raise AirflowFailException(f"no XCom {key!r} from task {task_id!r}: was the sweep planned?")
    return list(value)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def python_trial_runner(fn: Callable[..., Any]) -> Callable[[Mapping[str, Any], Mapping[str, str]], Any]:
    """
    Return a ``run_one`` that calls ``fn(**hparams)``; an exception becomes a :class:`TrialFailure`.

    ``fn`` also receives ``trial_id``, ``resources``, ``mlflow_run_id`` (the trial's MLflow
    run, None without tracking), ``budget`` (successive halving's rung budget, else None) and
    ``checkpoint_dir`` (the trial's checkpoint directory, else None) when its signature names
    them. With a checkpoint, ``$MLOPS_CHECKPOINT_DIR`` is also set while ``fn`` runs.
    """
    wanted = [name for name in EXTRA_ARGS if _accepts(fn, name)]

    def run_one(trial: Mapping[str, Any], extra_env: Mapping[str, str]) -> Any:
        kwargs = dict(trial.get("hparams") or {})
        for name in wanted:
            if name in kwargs:
                raise AirflowFailException(
                    f"trial parameter {name!r} clashes with the argument of the same name of {fn.__name__}"
                )
            if name == "mlflow_run_id":
                kwargs[name] = extra_env.get("MLFLOW_RUN_ID")
            elif name == "checkpoint_dir":
                kwargs[name] = extra_env.get(CHECKPOINT_DIR_ENV)
            else:
                kwargs[name] = trial.get(name)
        checkpoint_dir = extra_env.get(CHECKPOINT_DIR_ENV)
        previous = os.environ.get(CHECKPOINT_DIR_ENV)
        if checkpoint_dir is not None:
            os.environ[CHECKPOINT_DIR_ENV] = checkpoint_dir
        try:
            return fn(**kwargs)
        except AirflowFailException:
            raise
        except Exception as err:
            tail = traceback.format_exception(err)[-3:]
            raise TrialFailure(f"{type(err).__name__}: {err}", tail=[t.rstrip() for t in tail]) from err
        finally:
            if checkpoint_dir is not None:
                if previous is None:
                    os.environ.pop(CHECKPOINT_DIR_ENV, None)
                else:
                    os.environ[CHECKPOINT_DIR_ENV] = previous

    return run_one


class _Progress:
    """Counts of one batch, the best so far, and the time left, logged after each trial."""

    def __init__(self, log: logging.Logger | Any, size: int, ref: Mapping[str, Any]) -> None:
        self.log, self.size, self.ref = log, size, ref
        self.metric, self.mode = ref.get("metric"), ref.get("mode") or "min"
        self.done = self.failed = self.cached = 0
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()
        self.run_seconds: list[float] = []

    def add(self, record: Mapping[str, Any], ran_for: float | None) -> None:
        self.done += 1
        if record.get("status") != "success":
            self.failed += 1
        if record.get("cached"):
            self.cached += 1
        elif ran_for is not None:
            self.run_seconds.append(ran_for)
        value = (record.get("metrics") or {}).get(self.metric) if self.metric else None
        if record.get("status") == "success" and isinstance(value, (int, float)):
            better = self.best is None or (
                value < self.best[0] if self.mode == "min" else value > self.best[0]
            )
            if better:
                self.best = (float(value), str(record.get("trial_id")))

    def line(self, sweep: Mapping[str, Any] | None) -> str:
        index, n_batches = self.ref.get("index"), self.ref.get("n_batches")
        where = f"batch {int(index) + 1}/{n_batches}: " if index is not None and n_batches else ""
        for stage in ("round", "rung"):
            if self.ref.get(stage) is not None and self.ref.get(f"n_{stage}s"):
                where = f"{stage} {int(self.ref[stage]) + 1}/{self.ref[f'n_{stage}s']}, {where}"
        text = f"{where}{self.done}/{self.size} trials done ({self.failed} failed, {self.cached} cached)"
        if sweep and self.ref.get("round") is None and self.ref.get("rung") is None:
            text += f"; sweep: {sweep['done']}/{self.ref.get('total', '?')} done ({sweep['failed']} failed)"
        elif sweep:  # a staged sweep: the total of its later stages is not known yet
            text += f"; sweep: {sweep['done']} trial runs done so far ({sweep['failed']} failed)"
        best = self.best
        if sweep and sweep.get("best") is not None:
            tid, value = sweep["best"]
            if best is None or (value < best[0] if self.mode == "min" else value > best[0]):
                best = (float(value), str(tid))
        if best is not None:
            text += f"; best so far {self.metric}={best[0]:.6g} (trial {best[1]})"
        left = self.size - self.done
        if left and self.run_seconds:
            text += f"; about {_duration(left * sum(self.run_seconds) / len(self.run_seconds))} left in this batch"
        elif not left:
            text += f"; batch finished in {_duration(time.monotonic() - self.started)}"
        return text


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_batch(
    run_one: Callable[[Mapping[str, Any], Mapping[str, str]], Any],
    *,
    trials: Sequence[Mapping[str, Any]],
    context: Context | None,
    log: logging.Logger | Any,
    ref: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Run ``trials`` one after the other and return their records.

    With tracking (``ref["tracking"]``, set by ``plan_sweep``), each trial is a child run of the
    sweep's MLflow run: found again on a retry (a trial already finished by an earlier try is
    reused, not run again), and finished with its metrics or error. Progress is logged after
    each trial.

    :param run_one: Runs one trial: ``run_one(trial, extra_env) -> result``; raises
        ``TrialFailure`` for a failed trial.
    :param trials: The trials of the batch.
    :param context: The task's context.
    :param log: The task's logger.
    :param ref: The batch reference from ``plan_sweep`` (tracking, metric, position), if any.
    """
    ref = dict(ref or {})
    tracker = None
    if ref.get("tracking"):
        from airflow_mlops_provider.sweeps.tracking import SweepTracker, TrackingConfig

        tracker = SweepTracker(TrackingConfig.from_dict(ref["tracking"]), log=log)
    identity = task_identity(context) if tracker is not None and context is not None else {}
    reuse_done = tracker is not None and ref["tracking"].get("cache", "readwrite") != "off"
    progress = _Progress(log, len(trials), ref)
    records: list[dict[str, Any]] = []
    last_sweep_query = float("-inf")
    for trial in trials:
        trial_id = trial.get("trial_id")
        run = tracker.trial_run(dict(trial), identity) if tracker is not None and tracker.enabled else None
        # A trial an earlier try of this task finished is a cache hit too (unless cache="off",
        # which runs it again, logging into the same run).
        done = getattr(run, "record_if_done", None) if reuse_done else None
        if run is not None and done is not None:
            record = {**base_record(trial), **done, "cached": True, "mlflow_run_id": run.run_id}
            log.info(
                "Trial %s already finished in MLflow run %s (an earlier try): reused", trial_id, run.run_id
            )
            records.append(record)
            progress.add(record, None)
            log.info("Progress: %s", progress.line(None))
            continue
        run_id = getattr(run, "run_id", None)
        extra_env = tracker.container_env(run_id) if tracker is not None and run_id else {}
        started = time.monotonic()
        try:
            metrics, outputs = split_result(run_one(trial, extra_env), source=f"trial {trial_id}")
            record = {**base_record(trial), "status": "success", "metrics": metrics}
            if outputs:
                record["outputs"] = outputs
        except TrialResultError as err:
            record = failed_record(trial, str(err), failure="trial")
        except TrialFailure as err:
            record = failed_record(
                trial, err.reason, tail=err.tail, failure="trial" if err.cacheable else "infra"
            )
        seconds = time.monotonic() - started
        record.update(cached=False, mlflow_run_id=run_id, seconds=round(seconds, 3))
        if record["status"] == "success":
            log.info("Trial %s succeeded in %.1fs: %s", trial_id, seconds, record["metrics"])
        else:
            log.warning("Trial %s failed in %.1fs: %s", trial_id, seconds, record["error"])
            for line in record.get("tail") or []:
                log.warning("  | %s", line)
        if tracker is not None and run_id and tracker.enabled:
            tracker.finish_trial(run_id, record)
        records.append(record)
        progress.add(record, seconds)
        sweep = None
        if (
            tracker is not None
            and tracker.enabled
            and time.monotonic() - last_sweep_query >= SWEEP_PROGRESS_EVERY
        ):
            last_sweep_query = time.monotonic()
            sweep = tracker.progress()
        log.info("Progress: %s", progress.line(sweep))
    return records
