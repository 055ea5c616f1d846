"""A trial's result -> its record: what counts as metrics, what is a trial failure.

A trial's *result* (the dict a Python trial returns, or the JSON a container trial writes to
``/airflow/xcom/return.json``) is a JSON object whose values are finite numbers: its metrics.
The one exception is the reserved key ``"outputs"``, a JSON object for anything that is not a
metric (a model path, a device name)::

    {"val_auc": 0.81, "val_logloss": 0.42, "outputs": {"model_path": "/models/ab12.joblib"}}

A record is the trial plus its outcome (see :mod:`airflow_mlops_provider.sweeps.select`):
``status`` ``"success"`` with ``metrics`` (and ``outputs``), or ``"failed"`` with ``error``
and ``tail`` (the last lines of output); ``cached`` says the result was reused, not run now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["OUTPUTS_KEY", "TRIAL_KEYS", "TrialFailure", "TrialResultError", "failed_record", "split_result"]

#: The reserved result key for non-metric outputs.
OUTPUTS_KEY = "outputs"
#: The keys of a planned trial that a record keeps.
TRIAL_KEYS = ("trial_id", "hparams", "resources", "round", "rung", "budget")


class TrialResultError(ValueError):
    """A trial's result is not a JSON object of numbers (plus an optional ``outputs`` object)."""


class TrialFailure(Exception):
    """
    One trial failed; the sweep goes on and ``min_success_ratio`` decides.

    :param reason: What went wrong, for the leaderboard and the log.
    :param tail: The last lines of the trial's output.
    :param cacheable: True when the trial itself failed (exit code, OOM kill, bad result), so a
        rerun with the same inputs would fail the same way; False for trouble around it.
    """

    def __init__(self, reason: str, *, tail: Sequence[str] = (), cacheable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = [str(line) for line in tail]
        self.cacheable = cacheable


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def split_result(result: Any, *, source: str = "the trial") -> tuple[dict[str, float], dict[str, Any]]:
    """
    Return ``(metrics, outputs)`` of a trial's result.

    :param result: The result: a mapping of metric names to finite numbers, plus optionally
        ``"outputs"``: a mapping of anything JSON.
    :param source: Who produced it, for the message.
    :raises TrialResultError: naming the offending value and what was expected.
    """
    expected = (
        f"a JSON object of numbers (metric name -> finite number; anything else goes under {OUTPUTS_KEY!r})"
    )
    if not isinstance(result, Mapping):
        raise TrialResultError(
            f"{source} returned {type(result).__name__} {_short(result)}; expected {expected}"
        )
    metrics: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    for key, value in result.items():
        if not isinstance(key, str) or not key:
            raise TrialResultError(f"{source} returned a metric name {key!r}; expected non-empty strings")
        if key == OUTPUTS_KEY:
            if not isinstance(value, Mapping):
                raise TrialResultError(
                    f"{source} returned {OUTPUTS_KEY!r} = {_short(value)}; expected a JSON object"
                )
            outputs = dict(value)
        elif _is_number(value):
            metrics[key] = float(value) if isinstance(value, float) else value
        else:
            raise TrialResultError(f"{source} returned {key!r} = {_short(value)}; expected {expected}")
    if not metrics:
        raise TrialResultError(f"{source} returned no metric ({_short(result)}); expected {expected}")
    return metrics, outputs


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def base_record(trial: Mapping[str, Any]) -> dict[str, Any]:
    """Return the planned trial's keys that every record carries."""
    return {key: trial[key] for key in TRIAL_KEYS if key in trial}


def failed_record(
    trial: Mapping[str, Any], error: str, *, tail: Sequence[str] = (), **extra: Any
) -> dict[str, Any]:
    """Return the record of a failed trial."""
    return {**base_record(trial), "status": "failed", "error": error, "tail": list(tail), **extra}
