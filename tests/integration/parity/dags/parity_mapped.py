"""A mapped DAG for the parity table: the same ``.partial().expand_kwargs()`` on each runtime.

``PARITY_RUNTIMES`` (comma-separated, default ``docker,local``) names the runtimes to map on; each
gets a mapped ``trial_<runtime>`` task and a ``collect_<runtime>`` task that writes the trials'
results, by map index, to ``$PARITY_OUT/<runtime>.json``. The tests run this file with ``airflow
dags test`` for Docker and local, and through ``dag.test()`` for Kubernetes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.operators.container import container_operator

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
PROBE = (
    "import json, os, sys; open(os.environ['MLOPS_RESULT_FILE'], 'w').write(json.dumps("
    "dict(argv=sys.argv[1:], trial=os.environ.get('TRIAL'))))"
)
TRIALS = [
    {
        "command": ["python3", "-c", PROBE, "list", "{{ ti.map_index }}"],
        "env": {"TRIAL": "0"},
        "resources": {"cpus": 1, "memory": "256Mi"},
    },
    {
        "command": f'python3 -c "{PROBE}" string "{{{{ ti.map_index }}}}"',
        "env": {"TRIAL": "1"},
        "resources": '{"cpus": 0.5, "memory": "128Mi", "shm_size": "32Mi"}',
    },
]


@dag(dag_id="parity_mapped", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def parity_mapped():
    @task(trigger_rule="all_done")
    def collect(results, runtime: str) -> None:
        out = Path(os.environ["PARITY_OUT"]) / f"{runtime}.json"
        out.write_text(json.dumps(list(results)))

    for runtime in os.environ.get("PARITY_RUNTIMES", "docker,local").split(","):
        trials = (
            container_operator(runtime)
            .partial(task_id=f"trial_{runtime}", image=IMAGE, retries=0)
            .expand_kwargs(TRIALS)
        )
        collect.override(task_id=f"collect_{runtime}")(trials.output, runtime)


parity_mapped()
