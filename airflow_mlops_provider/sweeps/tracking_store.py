"""How a sweep is written into MLflow runs and read back: tag names, params, records, leaderboard.

Pure functions, no client: :class:`~airflow_mlops_provider.sweeps.tracking.SweepTracker` makes
the calls. A trial's run carries:

- params: the hyper-parameters (values JSON-encoded when not strings) and ``resources.*``;
- tags: the Airflow identity (``airflow.dag_id``, ``airflow.run_id``, ``airflow.task_id``,
  ``airflow.map_index``, ``airflow.try_number``), the sweep identity (``mlops.parent_run_id``,
  ``mlops.trial_id``, ``mlops.sweep_cache_key``), and once finished ``mlops.trial_status``,
  ``mlops.failure``, ``mlops.error``, ``mlops.tail``, ``mlops.outputs``, ``mlops.metric_keys``
  and, with ``cache="readwrite"``, ``mlops.cache_key``: the cache entry;
- metrics: the trial's metrics, and ``mlops.seconds``.

A trial of a successive-halving sweep keeps one run over its rungs: the rung is the MLflow step
of its metrics (and of ``mlops.budget``), and ``mlops.rung.<k>`` holds rung ``k``'s outcome as
JSON, which a retry or the cache reads back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.sweeps.records import base_record

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "CACHE_KEY_TAG",
    "KIND_TAG",
    "PARENT_TAG",
    "SWEEP_CACHE_KEY_TAG",
    "SWEEP_TASK_TAG",
    "TRIAL_ID_TAG",
    "TRIAL_STATUS_TAG",
    "cached_record",
    "chunks",
    "finish_payload",
    "leaderboard_csv",
    "leaderboard_json",
    "outcome_of_run",
    "rung_outcome",
    "rung_tag",
    "param_values",
    "safe_uri",
    "sanitized_key",
]

PARENT_TAG = "mlops.parent_run_id"
TRIAL_ID_TAG = "mlops.trial_id"
#: The sweep's cache key (or "off") on every trial run from its creation: a retried task finds
#: its trial's run by parent, trial id and this key, so a new ``cache_key`` makes new runs.
SWEEP_CACHE_KEY_TAG = "mlops.sweep_cache_key"
#: The cache entry: set on a finished trial run with ``cache="readwrite"`` only.
CACHE_KEY_TAG = "mlops.cache_key"
CACHE_KEY_TEXT_TAG = "mlops.cache_key_text"
TRIAL_STATUS_TAG = "mlops.trial_status"
FAILURE_TAG = "mlops.failure"
ERROR_TAG = "mlops.error"
TAIL_TAG = "mlops.tail"
OUTPUTS_TAG = "mlops.outputs"
OUTPUTS_ARTIFACT_TAG = "mlops.outputs_artifact"
METRIC_KEYS_TAG = "mlops.metric_keys"
TRUNCATED_TAG = "mlops.truncated_params"
SWEEP_TASK_TAG = "mlops.sweep_task"
KIND_TAG = "mlops.kind"
SECONDS_METRIC = "mlops.seconds"
BUDGET_METRIC = "mlops.budget"
RUNG_TAG_PREFIX = "mlops.rung."
OUTPUTS_ARTIFACT = "outputs.json"

#: mlflow/utils/validation.py (3.1 to 3.17): MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH,
#: MAX_ENTITY_KEY_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH.
PARAM_VALUE_LIMIT = 6000
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250
BATCH_PARAMS_TAGS = 100
BATCH_METRICS = 1000
#: Longest JSON kept in a tag (outputs, tail, metric keys); longer outputs become an artifact.
JSON_TAG_LIMIT = 4000
ERROR_LIMIT = 5000
#: mlflow/utils/validation.py ``_VALID_PARAM_AND_METRIC_NAMES``.
_UNSAFE_KEY = re.compile(r"[^/\w.\- :]")
_NEWLINES = re.compile(r"\s*\n\s*")
_USERINFO = re.compile(r"^([a-zA-Z][\w+.-]*://)[^/@]*@")


def safe_uri(uri: str) -> str:
    """``uri`` without ``user:password@`` (for messages and the container's environment)."""
    return _USERINFO.sub(r"\1", uri or "")


def sanitized_key(key: Any) -> str:
    """A param or metric name MLflow accepts: unsupported characters become ``_``, at most 250."""
    text = _UNSAFE_KEY.sub("_", str(key)) or "_"
    return text[:KEY_LIMIT]


def encoded(value: Any) -> str:
    """A param value: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def truncated(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a note saying so, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    note = f"...[truncated {len(text)} chars]"
    return text[: limit - len(note)] + note, True


def param_values(values: Mapping[str, Any], *, prefix: str = "") -> tuple[dict[str, str], list[str]]:
    """
    Return ``values`` as MLflow params (None skipped), and the keys whose value was truncated.

    :param values: Name -> value.
    :param prefix: Put before each name (``"resources."``).
    """
    params: dict[str, str] = {}
    cut: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        key = sanitized_key(f"{prefix}{name}")
        params[key], was_cut = truncated(encoded(value), PARAM_VALUE_LIMIT)
        if was_cut:
            cut.append(key)
    return params, cut


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _json_tag(value: Any) -> str | None:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= JSON_TAG_LIMIT else None


def _tail_tag(tail: Sequence[str]) -> str:
    lines = [str(line)[-500:] for line in tail]
    while lines and len(json.dumps(lines)) > JSON_TAG_LIMIT:
        lines.pop(0)
    return json.dumps(lines)


def finish_payload(
    record: Mapping[str, Any], *, cache_key: str | None, cache_key_text: str | None, write_cache: bool
) -> tuple[dict[str, float], dict[str, str], str | None, str]:
    """
    Return what finishing a trial run writes: ``(metrics, tags, outputs_json_or_None, status)``.

    ``outputs_json`` is set when the outputs are too long for a tag (logged as ``outputs.json``).
    The cache entry (``mlops.cache_key``) is written for a success and for a failure of the trial
    itself (``record["failure"] == "trial"``), only when ``write_cache``.
    """
    success = record.get("status") == "success"
    metrics: dict[str, float] = {}
    keys: dict[str, str] = {}
    for name, value in (record.get("metrics") or {}).items() if success else ():
        key = sanitized_key(name)
        keys[str(name)] = key
        metrics[key] = float(value)
    if record.get("seconds") is not None:
        metrics[SECONDS_METRIC] = float(record["seconds"])
    tags = {TRIAL_STATUS_TAG: "success" if success else "failed"}
    outputs_file = None
    if success:
        keys_text = _json_tag(keys)
        if keys_text is not None:
            tags[METRIC_KEYS_TAG] = keys_text
        if record.get("outputs"):
            outputs_text = _json_tag(record["outputs"])
            if outputs_text is None:
                outputs_file = json.dumps(record["outputs"], sort_keys=True, default=str)
                tags[OUTPUTS_ARTIFACT_TAG] = OUTPUTS_ARTIFACT
            else:
                tags[OUTPUTS_TAG] = outputs_text
    else:
        tags[FAILURE_TAG] = str(record.get("failure") or "trial")
        tags[ERROR_TAG] = truncated(str(record.get("error") or ""), ERROR_LIMIT)[0]
        tags[TAIL_TAG] = _tail_tag(record.get("tail") or [])
    if write_cache and cache_key and (success or tags[FAILURE_TAG] == "trial"):
        tags[CACHE_KEY_TAG] = cache_key
        if cache_key_text:
            tags[CACHE_KEY_TEXT_TAG] = truncated(cache_key_text, TAG_VALUE_LIMIT)[0]
    return metrics, tags, outputs_file, "FINISHED" if success else "FAILED"


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def outcome_of_run(
    run: Any, *, metric: str | None, cache_failures: bool, outputs: Any = None
) -> tuple[dict[str, Any] | None, str | None]:
    """
    Read a finished trial run back: ``(outcome, None)`` when it can be reused, else ``(None, why)``.

    The outcome holds ``status``, ``metrics`` (and ``outputs``) or ``error``, ``tail`` and
    ``failure``, and ``seconds``. A FINISHED success must hold ``metric`` (when given); a FAILED
    run is reused only when the trial itself failed (``mlops.failure=trial``) and
    ``cache_failures``.

    :param outputs: Returns the outputs of a run whose outputs are an artifact (called lazily).
    """
    tags, status, run_id = run.data.tags, run.info.status, run.info.run_id
    seconds = run.data.metrics.get(SECONDS_METRIC)
    if status == "FINISHED" and tags.get(TRIAL_STATUS_TAG) == "success":
        logged = run.data.metrics
        keys = _loads(tags.get(METRIC_KEYS_TAG), None)
        if isinstance(keys, dict):
            metrics = {name: logged[key] for name, key in keys.items() if key in logged}
        else:
            metrics = {k: v for k, v in logged.items() if not k.startswith("mlops.")}
        if metric and metric not in metrics:
            return None, f"run {run_id} lacks metric {metric!r}"
        outcome: dict[str, Any] = {"status": "success", "metrics": metrics}
        if OUTPUTS_TAG in tags:
            outcome["outputs"] = _loads(tags[OUTPUTS_TAG], {})
        elif OUTPUTS_ARTIFACT_TAG in tags and outputs is not None:
            outcome["outputs"] = outputs(run_id, tags[OUTPUTS_ARTIFACT_TAG])
    elif status == "FAILED" and tags.get(FAILURE_TAG) == "trial":
        if not cache_failures:
            return None, f"run {run_id} failed and cache_failures is off"
        outcome = {
            "status": "failed",
            "error": tags.get(ERROR_TAG, ""),
            "tail": _loads(tags.get(TAIL_TAG), []),
            "failure": "trial",
        }
    else:
        return None, f"run {run_id} is {status} ({tags.get(FAILURE_TAG) or tags.get(TRIAL_STATUS_TAG)})"
    if isinstance(seconds, (int, float)) and math.isfinite(seconds):
        outcome["seconds"] = float(seconds)
    return outcome, None


def rung_tag(record: Mapping[str, Any]) -> dict[str, str]:
    """The ``mlops.rung.<k>`` tag of a halving trial's record (``{}`` for a trial without a rung)."""
    if record.get("rung") is None:
        return {}
    value: dict[str, Any] = {"budget": record.get("budget"), "status": record.get("status")}
    if record.get("status") == "success":
        value["metrics"] = dict(record.get("metrics") or {})
        if record.get("outputs") and _json_tag(record["outputs"]) is not None:
            value["outputs"] = record["outputs"]
    else:
        value["error"] = truncated(str(record.get("error") or ""), 1000)[0]
        value["failure"] = str(record.get("failure") or "trial")
    return {f"{RUNG_TAG_PREFIX}{int(record['rung'])}": json.dumps(value, sort_keys=True, default=str)}


def rung_outcome(
    run: Any, trial: Mapping[str, Any], *, metric: str | None, cache_failures: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """
    Read rung ``trial["rung"]`` of a halving trial's run back, as :func:`outcome_of_run` reads a run.

    The rung's budget must be the trial's (a changed schedule runs the trial again).
    """
    run_id, rung = run.info.run_id, int(trial["rung"])
    data = _loads(run.data.tags.get(f"{RUNG_TAG_PREFIX}{rung}"), None)
    if not isinstance(data, dict):
        return None, f"run {run_id} has no result for rung {rung + 1}"
    if data.get("budget") != trial.get("budget"):
        return (
            None,
            f"run {run_id} ran rung {rung + 1} at budget {data.get('budget')!r}, not {trial.get('budget')!r}",
        )
    if data.get("status") == "success":
        metrics = dict(data.get("metrics") or {})
        if metric and metric not in metrics:
            return None, f"run {run_id} lacks metric {metric!r} at rung {rung + 1}"
        outcome: dict[str, Any] = {"status": "success", "metrics": metrics}
        if data.get("outputs"):
            outcome["outputs"] = data["outputs"]
        return outcome, None
    if data.get("failure") == "trial" and cache_failures:
        return {"status": "failed", "error": data.get("error", ""), "tail": [], "failure": "trial"}, None
    return None, f"run {run_id} failed at rung {rung + 1} ({data.get('failure')})"


def cached_record(trial: Mapping[str, Any], outcome: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The record of a trial served from the cache: the planned trial plus the run's outcome."""
    return {**base_record(trial), **outcome, "cached": True, "mlflow_run_id": run_id}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _one_line(text: Any) -> Any:
    """A multi-line error on one CSV line (the JSON artifact keeps it whole)."""
    return _NEWLINES.sub(" | ", text.strip()) if isinstance(text, str) else text


def _rows(result: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    metric = str(result.get("metric") or "metric")
    board = list(result.get("leaderboard") or [])
    head = ["rank", "trial_id", "status", "cached", metric]
    head += [k for k in ("round", "rung", "budget") if any(r.get(k) is not None for r in board)]
    names = sorted({str(k) for r in board for k in (r.get("hparams") or {})})
    hcols = {
        n: (n if n not in head and n not in ("error", "mlflow_run_id") else f"hparam.{n}") for n in names
    }
    columns = [*head, *hcols.values(), "error", "mlflow_run_id"]
    rows = []
    for record in board:
        row = {
            "rank": record.get("rank"),
            "trial_id": record.get("trial_id"),
            "status": record.get("status"),
            "cached": bool(record.get("cached")),
            metric: (record.get("metrics") or {}).get(metric),
            "error": _one_line(record.get("error")),
            "mlflow_run_id": record.get("mlflow_run_id"),
        }
        for stage in ("round", "rung", "budget"):
            if stage in head:
                row[stage] = record.get(stage)
        hparams = record.get("hparams") or {}
        for name, column in hcols.items():
            row[column] = _cell(hparams.get(name))
        rows.append(row)
    return columns, rows


def leaderboard_json(result: Mapping[str, Any]) -> str:
    """The ``leaderboard.json`` artifact: the sweep's summary and every trial's record, best first."""
    best = result.get("best") or {}
    document = {
        "metric": result.get("metric"),
        "mode": result.get("mode"),
        "best_trial_id": best.get("trial_id"),
        **{k: result.get(k) for k in ("n_trials", "n_succeeded", "n_failed", "n_cached")},
        **{k: result[k] for k in ("kind", "n_stages", "budget_spent") if k in result},
        "leaderboard": list(result.get("leaderboard") or []),
    }
    return json.dumps(document, indent=2, sort_keys=False, default=str)


def leaderboard_csv(result: Mapping[str, Any]) -> str:
    """The ``leaderboard.csv`` artifact: one row per trial (rank, id, status, cached, metric, hparams, error)."""
    columns, rows = _rows(result)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
