"""One DAG for Docker and Kubernetes: a small GPU-or-CPU sweep of container trials.

The runtime is picked when the file is parsed: ``AIRFLOW__MLOPS__RUNTIME=docker`` (default, a
local Docker engine) or ``kubernetes`` (the cluster of the ``kubernetes_default`` connection).
The sweep is the package's three tasks: ``plan_sweep`` reads the search space from the form,
``container_trials`` runs one container per trial, ``select_best_trial`` ranks them by ``loss``.

Each trial fits ``y = 2x + 1`` by gradient descent in plain Python: its learning rate comes in
``LR`` (the template ``{{ trial.hparams.lr }}``), the whole trial in ``MLOPS_TRIAL`` (JSON). It
writes its metrics (``loss``, ``w``, ``b``) and, under ``outputs``, whether it saw a GPU and the
size of its ``/dev/shm`` to ``/airflow/xcom/return.json``. The space's ``resources`` entry gives
the trials two different memory and ``/dev/shm`` sizes; ``gpus_per_trial`` adds GPUs to each
(0 runs on CPU; on Docker a host without GPUs falls back to CPU). With an ``mlflow_default``
connection every trial is an MLflow run; without one the sweep runs untracked.

Params: the sweep's (``search_space``, ``gpus_per_trial``, ``cache``...), ``image`` (default
``$MLOPS_EXAMPLE_IMAGE`` or ``mlops-base:bookworm``: any image with ``python3``), ``steps``,
``namespace`` (Kubernetes only).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

TRIAL_SCRIPT = """
import json, os, pathlib, shutil
trial = json.loads(os.environ["MLOPS_TRIAL"])
lr, steps = float(os.environ["LR"]), int(os.environ["STEPS"])
gpu = bool(shutil.which("nvidia-smi")) or os.path.exists("/dev/nvidia0") or os.path.exists("/dev/kfd")
xs = [i / 10 for i in range(20)]
ys = [2 * x + 1 for x in xs]
w = b = 0.0
for _ in range(steps):
    errs = [w * x + b - y for x, y in zip(xs, ys)]
    w -= lr * 2 * sum(e * x for e, x in zip(errs, xs)) / len(xs)
    b -= lr * 2 * sum(errs) / len(xs)
loss = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
device, shm = "gpu" if gpu else "cpu", shutil.disk_usage("/dev/shm").total
out = pathlib.Path(os.environ.get("MLOPS_RESULT_FILE", "/airflow/xcom/return.json"))
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"loss": loss, "w": w, "b": b, "outputs": {"device": device, "shm_bytes": shm}}))
print(f"trial {trial['trial_id']}: lr={lr} loss={loss:.6f} on {device}, /dev/shm {shm} bytes")
"""

SEARCH_SPACE = {
    "lr": [0.05, 0.2],
    # Per-trial resources: every learning rate is tried with both sizes.
    "resources": [
        {"cpus": 1, "memory": "256Mi", "shm_size": "64Mi"},
        {"cpus": 1, "memory": "512Mi", "shm_size": "128Mi"},
    ],
}


def _params() -> dict:
    params = sweep_params(search_space=SEARCH_SPACE, strategy="grid", metric="loss", mode="min")
    del params["runtime"]  # chosen when the file is parsed, not per run
    return {
        **params,
        "image": Param(os.environ.get("MLOPS_EXAMPLE_IMAGE", "mlops-base:bookworm"), type="string"),
        "steps": Param(200, type="integer", minimum=1),
        "namespace": Param("default", type="string", description="Kubernetes namespace"),
    }


@dag(
    dag_id="mlops_gpu_container",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "example", "gpu"],
    params=_params(),
)
def mlops_gpu_container():
    batches = plan_sweep()  # the space, GPUs per trial and cache settings from the form
    results = container_trials(
        task_id="trial",
        batches=batches,
        image="{{ params.image }}",
        command=["python3", "-c", TRIAL_SCRIPT],
        env={"LR": "{{ trial.hparams.lr }}", "STEPS": "{{ params.steps }}"},
        docker_kwargs={"gpu_fallback": "cpu"},
        kubernetes_kwargs={"namespace": "{{ params.namespace }}", "image_pull_policy": "IfNotPresent"},
    )
    select_best_trial(results, batches)


mlops_gpu_container()
