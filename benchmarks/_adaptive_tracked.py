"""The tracked variant of figure 3: where a tracked stage's plan task (and the next trial task) spends its time.

Not a benchmark itself. The tracked DAG file of ``_adaptive_airflow.py`` starts with
:data:`TIMING_HOOK` (benchmark only: it changes nothing the tasks do). In every process that
parses the file, it logs ``bench-timing {json}`` lines with epoch times: the DAG file's start and
end (:data:`TIMING_HOOK_END`), how long ``import mlflow``, ``import
mlflow.tracking.request_header.registry`` (MLflow's request-header plugins: every
``mlflow.request_header_provider`` entry point, Feast's among them) and ``import feast`` took,
and the first MLflow REST request of the process (``mlflow.utils.rest_utils.http_request``,
which makes that registry import). :func:`task_timeline` reads them back from a task
instance's log, with the timestamps of the provider's own log lines that end each step of a
plan task (the ask, ``start_sweep``, ``cached_results``, the XComs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

TIMING_HOOK = """
# ---- timing of MLflow's one-off costs (benchmarks/_adaptive_tracked.py; benchmark only) ----
import functools as _functools
import importlib.abc as _importlib_abc
import json as _json
import logging as _logging
import sys as _sys
import time as _time

_TIMED = {
    "mlflow": "import mlflow",
    "mlflow.tracking.request_header.registry": "request-header plugins",
    "feast": "import feast",
    "mlflow.utils.rest_utils": None,
}
_timing_log = _logging.getLogger("bench.timing")


def _mark(what, start, end=None):
    mark = {"what": what, "at": start} if end is None else {"what": what, "start": start, "end": end}
    _timing_log.info("bench-timing %s", _json.dumps(mark))


def _time_first_request(module):
    inner, done = module.http_request, []

    @_functools.wraps(inner)
    def http_request(*args, **kwargs):
        if done:
            return inner(*args, **kwargs)
        done.append(True)
        started = _time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            _mark("first MLflow request", started, _time.time())

    module.http_request = http_request


class _TimedImports(_importlib_abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _TIMED:
            return None
        for finder in _sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        inner = getattr(spec.loader, "exec_module", None)
        if inner is None:
            return spec

        def exec_module(module):
            started = _time.time()
            inner(module)
            if _TIMED[name]:
                _mark(_TIMED[name], started, _time.time())
            else:
                _time_first_request(module)

        spec.loader.exec_module = exec_module
        return spec


if not any(type(f).__name__ == "_TimedImports" for f in _sys.meta_path):
    _sys.meta_path.insert(0, _TimedImports())
_mark("DAG file starts", _time.time())
# ---- end of the timing hook ----
"""

TIMING_HOOK_END = '\n\n_mark("DAG file parsed", _time.time())\n'

#: Provider log lines that end each step of a plan task: (step, what the line starts with or holds).
PLAN_LINES = (
    ("ask", ("Round ", "Rung ")),
    ("start_sweep", ("Sweep tracked in MLflow experiment",)),
    ("cached_results", ("Trial cache ",)),
    ("XComs", ("Planned ",)),
)


@dataclass
class Timeline:
    """One task instance's marks (epoch seconds) and timed spans ``{what: (start, end)}``, from its log."""

    marks: dict[str, float] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def took(self, what: str) -> float | None:
        span = self.spans.get(what)
        return None if span is None else span[1] - span[0]


def _when(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def task_log(home: Path, ti: dict[str, Any]) -> Path | None:
    """The log file of a task instance under ``home/logs`` (its latest attempt), or None."""
    folder = (
        home / "logs" / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}" / f"task_id={ti['task_id']}"
    )
    if ti.get("map_index", -1) >= 0:
        folder = folder / f"map_index={ti['map_index']}"
    logs = sorted(folder.glob("attempt=*.log"))
    return logs[-1] if logs else None


def task_timeline(home: Path, ti: dict[str, Any]) -> Timeline:
    """Read a task instance's timing marks and the ends of its plan steps from its log (JSON lines)."""
    timeline = Timeline()
    path = task_log(home, ti)
    if path is None:
        return timeline
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = str(entry.get("event", ""))
        if event.startswith("bench-timing "):
            mark = json.loads(event.removeprefix("bench-timing "))
            if "at" in mark:
                timeline.marks.setdefault(mark["what"], mark["at"])
            else:
                timeline.spans.setdefault(mark["what"], (mark["start"], mark["end"]))
            continue
        at = _when(entry.get("timestamp"))
        for step, starts in PLAN_LINES:
            if at is not None and step not in timeline.marks and any(event.startswith(s) for s in starts):
                if step != "ask" or "sampler was told" in event or "promoting" in event:
                    timeline.marks[step] = at
    return timeline


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def mlflow_costs(timeline: Timeline) -> str:
    """``import mlflow X, first MLflow request Y (request-header plugins Z, import feast W)``."""
    plugins = f"request-header plugins {_fmt(timeline.took('request-header plugins'))}"
    if timeline.took("import feast") is not None:
        plugins += f", of which import feast {_fmt(timeline.took('import feast'))}"
    return (
        f"import mlflow {_fmt(timeline.took('import mlflow'))}, first MLflow request "
        f"{_fmt(timeline.took('first MLflow request'))} ({plugins})"
    )


def plan_split(
    timeline: Timeline, started: float | None, ended: float | None
) -> tuple[str, dict[str, float]]:
    """
    Split one plan task instance's run (``started`` .. ``ended``: its start_date and end_date).

    Returns the line and ``{step: seconds}`` for the medians.
    """
    order = [("process to DAG file", "DAG file starts"), ("DAG parse", "DAG file parsed")]
    order += [("context, XCom pulls, ask" if step == "ask" else step, step) for step, _ in PLAN_LINES]
    order.append(("task end", "end"))
    marks = dict(timeline.marks, end=ended) if ended is not None else dict(timeline.marks)
    spans, previous = {}, started
    for what, mark in order:
        at = marks.get(mark)
        if at is None or previous is None:
            continue
        spans[what] = at - previous
        previous = at
    text = ", ".join(f"{what} {seconds:.2f}" for what, seconds in spans.items())
    for key in ("import mlflow", "first MLflow request", "request-header plugins", "import feast"):
        took = timeline.took(key)
        if took is not None:
            spans[key] = took
    return f"{text}; inside start_sweep: {mlflow_costs(timeline)}", spans


def trial_split(timeline: Timeline | None, started: float | None, trial_started: float | None) -> str:
    """The next stage's first trial task, from its start_date to its first trial's own start."""
    if timeline is None or started is None or trial_started is None:
        return "?"
    parse = None
    if "DAG file starts" in timeline.marks and "DAG file parsed" in timeline.marks:
        parse = timeline.marks["DAG file parsed"] - timeline.marks["DAG file starts"]
    return f"{trial_started - started:.2f} s: DAG parse {_fmt(parse)}, {mlflow_costs(timeline)}"
