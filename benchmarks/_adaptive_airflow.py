"""The Airflow side of the adaptive-sweep benchmark: one TPE and one halving DAG, timed per stage.

Not a benchmark itself. The DAG file is this directory's ``_adaptive_objectives.py`` (pasted
whole, so the trials compute what the direct calls compute) followed by two DAGs, untracked
(``mlflow_conn_id=None``), cache off:

- ``bench_adaptive_tpe``: ``adaptive_sweep`` of ``mixed_hartmann``, TPE, ``ROUNDS`` x ``SIZE``;
- ``bench_adaptive_halving``: ``halving_sweep`` of ``budgeted_hartmann``, ``halving(1, 27, 3)``,
  ``N_HALVING`` first-rung trials.

With ``tracked=True``, a second DAG file holds the same two DAGs tracked (:data:`TRACKED_IDS`,
``mlflow_default``, cache :data:`TRACKED_CACHE`), after the timing hook of ``_adaptive_tracked.py``.

Each trial returns its wall-clock start and end under ``outputs``. :func:`scheduled_runs` runs
both DAGs under a real api-server + scheduler (LocalExecutor) + dag-processor on loopback
(``tests/support/airflow_services.py``) and returns, per stage boundary, the timestamps that split
the gap between the last trial of stage k and the first trial of stage k+1.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from _sweep_bench import BenchHome, DagRunTimes

HERE = Path(__file__).resolve().parent
TPE_DAG, HALVING_DAG = "bench_adaptive_tpe", "bench_adaptive_halving"
ROUNDS, SIZE, TASKS, SEED = 4, 4, 2, 7
N_HALVING, HALVING_ARGS = 27, (1, 27, 3)
#: The same two DAGs tracked in MLflow (``mlflow_default``), with the cache a tracked sweep has by default.
TRACKED_IDS = ("bench_adaptive_tpe_tracked", "bench_adaptive_halving_tracked")
TRACKED_CACHE = "readwrite"

DAG_DEFS = textwrap.dedent(
    """

    # ---- the DAGs (the objectives above are benchmarks/_adaptive_objectives.py) ----
    import time

    import pendulum
    from airflow.sdk import dag

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import adaptive_sweep, halving, halving_sweep, trial_task

    START = pendulum.datetime(2025, 1, 1, tz="UTC")


    @trial_task
    def tpe_trial(**hparams):
        started = time.time()
        loss = mixed_hartmann(hparams)
        return {{"loss": loss, "outputs": {{"started": started, "ended": time.time()}}}}


    @trial_task
    def halving_trial(budget, **hparams):
        started = time.time()
        loss = budgeted_hartmann(hparams, budget)
        return {{"loss": loss, "outputs": {{"started": started, "ended": time.time()}}}}


    @dag(
        dag_id="{tpe}",
        schedule=None,
        start_date=START,
        catchup=False,
        params=sweep_params(
            search_space=MIXED_SPACE, strategy="tpe", rounds={rounds}, trials_per_round={size}, seed={seed},
            metric="loss", mode="min", max_parallel_tasks={tasks}, cache="{cache}",
        ),
    )
    def tpe_sweep():
        adaptive_sweep(tpe_trial, rounds={rounds}, trials_per_round={size}, mlflow_conn_id={conn!r})


    @dag(
        dag_id="{halving}",
        schedule=None,
        start_date=START,
        catchup=False,
        params=sweep_params(
            search_space=MIXED_SPACE, n_trials={n}, seed={seed}, metric="loss", mode="min",
            max_parallel_tasks={tasks}, cache="{cache}",
        ),
    )
    def halving_sweep_dag():
        halving_sweep(halving_trial, halving{schedule}, n_trials={n}, mlflow_conn_id={conn!r})


    tpe_sweep()
    halving_sweep_dag()
    """
)


def dag_text(*, tracked: bool = False) -> str:
    """
    A DAG file: the objectives module, then the TPE and the halving DAG.

    :param tracked: The tracked DAGs (``TRACKED_IDS``, ``mlflow_default``, cache ``TRACKED_CACHE``),
        with the timing hook of ``_adaptive_tracked.py`` first; else the untracked ones, cache off.
    """
    from _adaptive_tracked import TIMING_HOOK, TIMING_HOOK_END

    tpe, halving_id = TRACKED_IDS if tracked else (TPE_DAG, HALVING_DAG)
    defs = DAG_DEFS.format(
        tpe=tpe, halving=halving_id, rounds=ROUNDS, size=SIZE, seed=SEED, tasks=TASKS,
        n=N_HALVING, schedule=HALVING_ARGS, conn="mlflow_default" if tracked else None,
        cache=TRACKED_CACHE if tracked else "off",
    )  # fmt: skip
    objectives = (HERE / "_adaptive_objectives.py").read_text()
    if not tracked:
        return objectives + defs
    head, _, body = objectives.partition("from __future__ import annotations\n")
    return head + "from __future__ import annotations\n" + TIMING_HOOK + body + defs + TIMING_HOOK_END


@dataclass
class Boundary:
    """The timestamps between stage k's last trial and stage k+1's first (epoch seconds; None if unknown)."""

    stage: int
    marks: dict[str, float | None] = field(default_factory=dict)
    #: The next stage's plan task instance, and its first trial task instance to start (REST API rows).
    plan_ti: dict[str, Any] = field(default_factory=dict)
    trial_ti: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return float(self.marks["next trial starts"] or 0) - float(self.marks["last trial ends"] or 0)


#: The marks of a boundary in time order: (mark, the span that ends at it, where the mark comes from).
MARKS = (
    ("last trial ends", "", "the last trial's own end (time.time())"),
    ("last trial task ends", "trial task teardown", "that trial task instance's end_date"),
    ("plan queued", "scheduler queues the plan", "the next plan's queued_when"),
    ("plan starts", "plan process starts", "its start_date"),
    ("plan ends", "plan task runs (DAG parse, Optuna import, ask, XComs)", "its end_date"),
    (
        "trial task queued",
        "scheduler expands and queues the trials",
        "the first next trial task's queued_when",
    ),
    ("trial task starts", "trial process starts", "its start_date"),
    ("next trial starts", "trial task: DAG parse, pull batch", "the next stage's first trial's own start"),
)


@dataclass
class AirflowRun:
    """One DAG run under the scheduler: its wall time, its select_best result, its stage boundaries."""

    dag_id: str
    run_id: str
    wall: float
    summary: dict[str, Any]
    boundaries: list[Boundary]
    stage_records: list[list[dict[str, Any]]]


def _epoch(value: str | None) -> float | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _stage_xcoms(db_path: Path, dag_id: str, run_id: str, prefix: str, trial_task: str, n: int):
    """Each stage's trial records (from the mapped trial tasks' XComs), in stage order."""
    db = sqlite3.connect(str(db_path))
    try:
        stages: list[list[dict[str, Any]]] = []
        for k in range(1, n + 1):
            rows = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? "
                "ORDER BY map_index",
                (dag_id, run_id, f"{prefix}_{k}.{trial_task}", "return_value"),
            ).fetchall()
            stages.append([r for (value,) in rows for r in json.loads(value)])
        return stages
    finally:
        db.close()


def _boundaries(tis: list[dict[str, Any]], stages, prefix: str, trial_task: str) -> list[Boundary]:
    def of(task_id: str) -> list[dict[str, Any]]:
        return [ti for ti in tis if ti["task_id"] == task_id]

    def first(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return min(known) if known else None

    out = []
    for k in range(1, len(stages)):
        trials_now, trials_next = of(f"{prefix}_{k}.{trial_task}"), of(f"{prefix}_{k + 1}.{trial_task}")
        plan = of(f"{prefix}_{k + 1}.plan")
        if not stages[k - 1] or not stages[k] or not plan:
            continue
        ends = [_epoch(ti["end_date"]) for ti in trials_now]
        marks = {
            "last trial ends": max(r["outputs"]["ended"] for r in stages[k - 1]),
            "last trial task ends": max(e for e in ends if e is not None) if any(ends) else None,
            "plan queued": _epoch(plan[0].get("queued_when")),
            "plan starts": _epoch(plan[0]["start_date"]),
            "plan ends": _epoch(plan[0]["end_date"]),
            "trial task queued": first([_epoch(ti.get("queued_when")) for ti in trials_next]),
            "trial task starts": first([_epoch(ti["start_date"]) for ti in trials_next]),
            "next trial starts": min(r["outputs"]["started"] for r in stages[k]),
        }
        started = [ti for ti in trials_next if ti.get("start_date")]
        trial_ti = min(started, key=lambda ti: _epoch(ti["start_date"]) or 0) if started else {}
        out.append(Boundary(stage=k, marks=marks, plan_ti=plan[0], trial_ti=trial_ti))
    return out


def _run_scheduled(
    api: Any, home: BenchHome, dag_id: str, prefix: str, trial_task: str, n: int
) -> AirflowRun:
    run_id = f"bench_{time.time_ns()}"
    started = time.perf_counter()
    status, body = api.call("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    if status != 200:
        raise SystemExit(f"could not trigger {dag_id}: {status} {body}")

    def finished() -> tuple[bool, Any]:
        status, body = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return status == 200 and body["state"] in ("success", "failed"), body

    body = api.wait_for(f"run {run_id} of {dag_id}", finished, timeout=600)
    wall = time.perf_counter() - started
    if body["state"] != "success":
        raise SystemExit(f"{dag_id} run {run_id} ended {body['state']}: see the task logs under {home.home}")
    status, answer = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
    if status != 200:
        raise SystemExit(f"could not list the task instances of {run_id}: {status} {answer}")
    tis = answer["task_instances"]
    stages = _stage_xcoms(home.home / "airflow.db", dag_id, run_id, prefix, trial_task, n)
    summary = home.xcom(DagRunTimes(dag_id=dag_id, run_id=run_id, wall=wall), "select_best") or {}
    return AirflowRun(dag_id, run_id, wall, summary, _boundaries(tis, stages, prefix, trial_task), stages)


def scheduled_runs(*, tracked: bool = False) -> tuple[BenchHome, dict[str, AirflowRun], float]:
    """
    Start Airflow's services on a fresh home, run each DAG once, stop them; return the home and runs.

    The caller runs ``home.dags_test`` afterwards (the services are stopped by then) and closes
    the home. Also returns the seconds the services took to come up and serve the DAGs.

    :param tracked: Also run the tracked DAGs (``TRACKED_IDS``, in a DAG file of their own so the
        untracked tasks parse what they parsed before) against a real ``mlflow server`` on
        loopback, started first and stopped with the services; ``mlflow_default`` points at it
        (``AIRFLOW_CONN_MLFLOW_DEFAULT``, in every Airflow process's environment).
    """
    from contextlib import ExitStack

    from _sweep_bench import mlflow_conn_env, running_mlflow

    from tests import conftest
    from tests.support.airflow_services import airflow_services, serve_dags

    runs: dict[str, AirflowRun] = {}
    logs = Path(tempfile.mkdtemp(prefix="adaptive-bench-logs-"))
    home: BenchHome | None = None
    try:
        with ExitStack() as stack:
            conn = mlflow_conn_env(stack.enter_context(running_mlflow()).url) if tracked else {}
            home = BenchHome(dag_text(), conn)
            dag_ids = [TPE_DAG, HALVING_DAG]
            if tracked:
                (home.dags / "bench_tracked_dags.py").write_text(dag_text(tracked=True))
                dag_ids += TRACKED_IDS
            env = {k: v for k, v in home.env.items() if k.startswith("AIRFLOW") or k == "PATH"}
            started = time.perf_counter()
            api = stack.enter_context(airflow_services(home.dags, logs, **env))
            serve_dags(api, *dag_ids)
            up = time.perf_counter() - started
            n_rungs = len(_halving_budgets())
            for dag_id in dag_ids:
                stages = (
                    ("round", "tpe_trial", ROUNDS) if "tpe" in dag_id else ("rung", "halving_trial", n_rungs)
                )
                runs[dag_id] = _run_scheduled(api, home, dag_id, *stages)
    except BaseException:
        scheduler_log = logs / "scheduler.log"
        if scheduler_log.exists():
            print(f"scheduler log (tail):\n{scheduler_log.read_text()[-3000:]}", flush=True)
        if home is not None:
            home.close()
        raise
    finally:
        shutil.rmtree(logs, ignore_errors=True)
        shutil.rmtree(conftest._AIRFLOW_HOME, ignore_errors=True)  # made by importing tests.conftest
    assert home is not None
    return home, runs, up


def _halving_budgets() -> list[float]:
    from airflow_mlops_provider.sweeps import halving

    return halving(*HALVING_ARGS).budgets


def optuna_import_seconds() -> float:
    """``import optuna`` in a fresh process that has imported ``airflow.sdk`` (as a plan task has)."""
    import subprocess
    import sys

    code = "import time, airflow.sdk; t = time.perf_counter(); import optuna; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return float(out.stdout.strip())
