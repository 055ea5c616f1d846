"""Container sweeps tracked in MLflow, for the end-to-end tests of issue 14.

``tracked_container_sweep``: six trials ``x = 1..6`` on Docker, three mapped tasks of two
trials each; x=5 exits 1, x=6 writes a malformed result, the others report ``loss = 1.5 x``.
``parallel_container_sweep``: four trials in two mapped tasks that record when they ran, for the
scheduler test. ``killed_container_sweep``: one slow trial whose task the test kills once.
``report`` writes the select-best result to ``$SWEEP_RESULT_DIR/<dag_id>.json`` when set.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")

TRIAL = """
import json, os, pathlib, sys, time
trial = json.loads(os.environ["MLOPS_TRIAL"])
x = trial["hparams"]["x"]
print(f"trial {os.environ['MLOPS_TRIAL_ID']} x={x} mlflow run {os.environ.get('MLFLOW_RUN_ID')}", flush=True)
started = time.time()
time.sleep(float(trial["hparams"].get("sleep", 0)))
out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
out.parent.mkdir(parents=True, exist_ok=True)
if x == 5:
    print("diverged: loss is nan", file=sys.stderr, flush=True)
    sys.exit(1)
if x == 6:
    out.write_text("{not json")
    sys.exit(0)
out.write_text(json.dumps({"loss": 1.5 * x, "started": started, "ended": time.time(), "outputs": {"x": x}}))
"""


@task
def report(summary: dict) -> dict:
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if out_dir:
        dag_id = get_current_context()["dag"].dag_id
        (Path(out_dir) / f"{dag_id}.json").write_text(json.dumps(summary))
    return {"n_cached": summary["n_cached"]}


def _sweep(dag_id: str, space: dict, *, max_parallel_tasks: int, retries: int = 0):
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(search_space=space, strategy="grid", metric="loss", mode="min"),
        tags=["mlops", "test"],
    )
    def sweep():
        batches = plan_sweep(max_parallel_tasks=max_parallel_tasks)
        results = container_trials(
            task_id="train",
            batches=batches,
            runtime="docker",
            image=IMAGE,
            command=["python3", "-c", TRIAL],
            retries=retries,
            retry_delay=timedelta(seconds=1),
        )
        report(select_best_trial(results, batches))

    return sweep()


tracked_container_sweep = _sweep("tracked_container_sweep", {"x": [1, 2, 3, 4, 5, 6]}, max_parallel_tasks=3)
parallel_container_sweep = _sweep(
    "parallel_container_sweep", {"x": [1, 2, 3, 4], "sleep": 4}, max_parallel_tasks=2
)
killed_container_sweep = _sweep(
    "killed_container_sweep", {"x": [1], "sleep": 25}, max_parallel_tasks=1, retries=2
)
