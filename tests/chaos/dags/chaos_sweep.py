"""A container sweep the chaos suite kills mid-trial: three trials in one batch, run in turn.

Tracking and the trial cache go through the fault proxy's ``mlflow_chaos`` connection; the
cache key is the run id, so repetitions never serve each other. Each trial writes
``<markers>/<run_id>/<trial_id>-start-<ns>`` and ``...-end-<ns>``, so the suite counts how often
every trial ran.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import dag

from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

MARKERS = os.environ.get("MLOPS_CHAOS_MARKERS", "/tmp/mlops-chaos-markers")
TRIAL = (
    "import json, os, time\n"
    "d = os.path.join('/markers', os.environ['RUN_ID'])\n"
    "os.makedirs(d, exist_ok=True)\n"
    "tid = os.environ['MLOPS_TRIAL_ID']\n"
    "open(os.path.join(d, '%s-start-%d' % (tid, time.time_ns())), 'w').close()\n"
    "time.sleep(float(os.environ['SLEEP']))\n"
    "x = json.loads(os.environ['MLOPS_TRIAL'])['hparams']['x']\n"
    "json.dump({'loss': float(x)}, open(os.environ['MLOPS_RESULT_FILE'], 'w'))\n"
    "open(os.path.join(d, '%s-end-%d' % (tid, time.time_ns())), 'w').close()\n"
)


@dag(
    dag_id="chaos_sweep",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["chaos"],
)
def chaos_sweep():
    batches = plan_sweep(
        search_space={"x": [1, 2, 3]},
        strategy="grid",
        metric="loss",
        mode="min",
        max_parallel_tasks=1,
        mlflow_conn_id="mlflow_chaos",
        cache="readwrite",
        cache_key="{{ run_id }}",
    )
    results = container_trials(
        task_id="train",
        batches=batches,
        runtime="docker",
        image=os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm"),
        command=["python3", "-c", TRIAL],
        env={"RUN_ID": "{{ run_id }}", "SLEEP": "6"},
        docker_kwargs={
            "host_gpus": 4,
            "mounts": [{"target": "/markers", "source": MARKERS, "type": "bind"}],
        },
        retries=1,
        retry_delay=dt.timedelta(seconds=1),
    )
    select_best_trial(results, batches)


chaos_sweep()
