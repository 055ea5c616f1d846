"""Run one trial into a result record, and reduce a sweep's records to the best trial and a leaderboard.

A trial record is the trial plus its outcome::

    {"trial_id": "...", "hparams": {...}, "resources": {...},   # as planned
     "status": "success", "metrics": {"loss": 0.12}}          # or
     "status": "failed", "error": "ValueError: ..."}
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from airflow_mlops_provider.exceptions import SweepError
from airflow_mlops_provider.sweeps.batching import flatten_results

__all__ = ["MODES", "run_trial", "run_trials", "select_best"]

log = logging.getLogger(__name__)

#: Directions a metric may be optimised in.
MODES = ("min", "max")
_EXTRA_ARGS = ("trial_id", "resources")


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def run_trial(fn: Callable[..., Any], trial: Mapping[str, Any]) -> dict[str, Any]:
    """
    Call ``fn(**trial["hparams"])`` and return the trial's record; an exception becomes a failed record.

    ``fn`` also receives ``trial_id`` and ``resources`` when its signature names them. It must
    return a dict of metrics (numbers).

    :param fn: The per-trial function.
    :param trial: The trial dict.
    """
    params = dict(trial.get("hparams") or {})
    kwargs = dict(params)
    for name in _EXTRA_ARGS:
        if _accepts(fn, name):
            if name in params:
                raise ValueError(
                    f"trial parameter {name!r} clashes with the argument of the same name of {fn.__name__}"
                )
            kwargs[name] = trial.get(name)
    record: dict[str, Any] = {key: trial[key] for key in ("trial_id", "hparams", "resources") if key in trial}
    try:
        metrics = fn(**kwargs)
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        return record
    if not isinstance(metrics, Mapping):
        record.update(
            status="failed",
            error=f"{fn.__name__} returned {type(metrics).__name__} {metrics!r}; a trial must return a dict of metrics",
        )
        return record
    record.update(status="success", metrics=dict(metrics))
    return record


def run_trials(fn: Callable[..., Any], trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """
    Run ``trials`` one after the other with :func:`run_trial` and log progress; return their records.

    :param fn: The per-trial function.
    :param trials: The trials of one batch.
    """
    records = []
    started = time.monotonic()
    failed = 0
    step = max(1, len(trials) // 10)
    for index, trial in enumerate(trials, start=1):
        record = run_trial(fn, trial)
        if record["status"] != "success":
            failed += 1
            log.warning("Trial %s failed: %s", record.get("trial_id"), record["error"])
        records.append(record)
        if index % step == 0 or index == len(trials):
            log.info(
                "Trials done: %d/%d (%d failed), %.1fs elapsed",
                index,
                len(trials),
                failed,
                time.monotonic() - started,
            )
    return records


def _check_args(metric: Any, mode: Any, min_success_ratio: Any) -> None:
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be a non-empty string, got {metric!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if (
        isinstance(min_success_ratio, bool)
        or not isinstance(min_success_ratio, (int, float))
        or not 0 <= min_success_ratio <= 1
    ):
        raise ValueError(f"min_success_ratio must be a number between 0 and 1, got {min_success_ratio!r}")


def _score(record: dict[str, Any], metric: str) -> float | None:
    """Return the record's metric as a float, or mark the record failed and return None."""
    value = record["metrics"][metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        record.update(status="failed", error=f"metric {metric!r} is not a number: {value!r}")
        return None
    return float(value)


def select_best(
    results: Iterable[Any],
    *,
    metric: str,
    mode: str = "min",
    min_success_ratio: float = 0.5,
    expected_trials: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """
    Return the best trial and the leaderboard of a sweep.

    The result is ``{"best": record, "leaderboard": [...], "metric", "mode", "n_trials",
    "n_succeeded", "n_failed"}``. The leaderboard holds every trial: the successful ones sorted
    best first (ties broken by trial id) with a 1-based ``rank``, then the failed ones.

    :param results: Trial records, or lists of them (the output of a mapped task).
    :param metric: The metric to optimise; every successful trial must report it.
    :param mode: ``"min"`` or ``"max"``.
    :param min_success_ratio: Fewest successful trials, as a share of all, to accept (0..1).
    :param expected_trials: The planned trials (or batches of them); a planned trial without a
        record (its task died) counts as failed.
    :raises ValueError: on bad arguments or a metric no successful trial reports.
    :raises SweepError: when too few trials succeeded.
    """
    _check_args(metric, mode, min_success_ratio)
    records = flatten_results(results)
    if expected_trials is not None:
        seen = {r.get("trial_id") for r in records}
        planned = [
            t
            for item in expected_trials
            for t in (item.get("trials", [item]) if isinstance(item, Mapping) else item)
        ]
        for trial in planned:
            if trial["trial_id"] not in seen:
                missing = {k: trial[k] for k in ("trial_id", "hparams", "resources") if k in trial}
                records.append({**missing, "status": "failed", "error": "no result: its task did not finish"})
    if not records:
        raise SweepError("the sweep has no trial results to select from")
    succeeded = [r for r in records if r.get("status") == "success"]
    lacking = [r for r in succeeded if metric not in (r.get("metrics") or {})]
    if lacking:
        reported = sorted({k for r in succeeded for k in (r.get("metrics") or {})})
        raise ValueError(
            f"metric {metric!r} is missing from the results of {len(lacking)} trial(s) "
            f"(e.g. {lacking[0].get('trial_id')!r}); the trials report {reported}"
        )
    scored = [(score, r) for r in succeeded if (score := _score(r, metric)) is not None]
    failed = [r for r in records if r.get("status") != "success"]
    total = len(records)
    ratio = len(scored) / total
    if not scored or ratio < min_success_ratio:
        examples = "; ".join(f"{r.get('trial_id')}: {r.get('error')}" for r in failed[:3])
        raise SweepError(
            f"only {len(scored)} of {total} trials succeeded ({ratio:.0%}), below "
            f"min_success_ratio={min_success_ratio!r}; first failures: {examples}"
        )
    sign = 1 if mode == "min" else -1
    scored.sort(key=lambda pair: (sign * pair[0], str(pair[1].get("trial_id"))))
    leaderboard = []
    for rank, (_, record) in enumerate(scored, start=1):
        leaderboard.append({**record, "rank": rank})
    failed.sort(key=lambda r: str(r.get("trial_id")))
    leaderboard.extend({**record, "rank": None} for record in failed)
    log.info(
        "Best trial %s: %s=%s (%d of %d trials succeeded)",
        leaderboard[0]["trial_id"],
        metric,
        leaderboard[0]["metrics"][metric],
        len(scored),
        total,
    )
    return {
        "best": leaderboard[0],
        "leaderboard": leaderboard,
        "metric": metric,
        "mode": mode,
        "n_trials": total,
        "n_succeeded": len(scored),
        "n_failed": total - len(scored),
    }
