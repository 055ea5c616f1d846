"""A DAG for the local-process runtime: one trial that writes a result, one that fails."""

from __future__ import annotations

import os
import sys

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.operators.local import LocalProcessOperator

WRITER = (
    "import json, os, socket; print('training on', socket.gethostname(), flush=True); "
    "json.dump({'trial': os.environ['TRIAL'], 'loss': 0.25}, open(os.environ['MLOPS_RESULT_FILE'], 'w'))"
)


@dag(dag_id="local_runtime", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def local_runtime():
    trials = LocalProcessOperator.partial(
        task_id="trial",
        image="ignored:latest",
        command=[sys.executable, "-c", WRITER],
        docker_kwargs={"network_mode": "none"},
    ).expand_kwargs([{"env": {"TRIAL": "a"}}, {"env": {"TRIAL": "b"}, "resources": {"gpus": 1}}])

    LocalProcessOperator(
        task_id="failing",
        command=[
            sys.executable,
            "-c",
            "import sys; print('line one'); print('boom', file=sys.stderr); sys.exit(3)",
        ],
        retries=0,
    )

    @task(trigger_rule="all_done")
    def collect(results) -> None:
        got = sorted(r["trial"] for r in results)
        assert got == ["a", "b"], got
        with open(os.environ["LOCAL_RUNTIME_OUT"], "w") as fh:
            fh.write(",".join(got))

    collect(trials.output)


local_runtime()
