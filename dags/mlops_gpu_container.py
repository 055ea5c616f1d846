"""One DAG for Docker and Kubernetes: a small GPU-or-CPU sweep written with ``container_operator``.

The runtime is picked when the file is parsed: ``AIRFLOW__MLOPS__RUNTIME=docker`` (default, a
local Docker engine) or ``kubernetes`` (the cluster of the ``kubernetes_default`` connection).
Each trial fits ``y = 2x + 1`` by gradient descent in plain Python, reports whether it saw a GPU,
and writes its result to ``/airflow/xcom/return.json``; ``select_best`` keeps the lowest loss.

Params: ``image`` (default ``$MLOPS_EXAMPLE_IMAGE`` or ``mlops-base:bookworm``: any image with
``python3``), ``gpus`` per trial (0 runs on CPU; on Docker a host without GPUs falls back to CPU),
``namespace`` (Kubernetes only).
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

from airflow_mlops_provider.operators.container import container_operator

log = logging.getLogger(__name__)
ContainerOperator = container_operator()  # docker or kubernetes, from [mlops] runtime

TRIAL_SCRIPT = """
import json, os, pathlib, shutil
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
out = pathlib.Path("/airflow/xcom")
out.mkdir(parents=True, exist_ok=True)
(out / "return.json").write_text(json.dumps({
    "trial": int(os.environ["TRIAL"]), "lr": lr, "loss": loss, "w": w, "b": b,
    "device": "gpu" if gpu else "cpu", "shm_bytes": shutil.disk_usage("/dev/shm").total,
}))
print(f"trial {os.environ['TRIAL']}: lr={lr} loss={loss:.6f} on {'gpu' if gpu else 'cpu'}")
"""

#: (learning rate, CPU cores, memory, /dev/shm) of each trial.
TRIALS = [(0.05, 1, "256Mi", "64Mi"), (0.2, 1, "512Mi", "128Mi")]


@dag(
    dag_id="mlops_gpu_container",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "example", "gpu"],
    params={
        "image": Param(os.environ.get("MLOPS_EXAMPLE_IMAGE", "mlops-base:bookworm"), type="string"),
        "gpus": Param(0, type="integer", minimum=0, description="GPUs per trial (0 = CPU)"),
        "steps": Param(200, type="integer", minimum=1),
        "namespace": Param("default", type="string", description="Kubernetes namespace"),
    },
)
def mlops_gpu_container():
    @task
    def trials(params: dict | None = None) -> list[dict]:
        """One set of operator arguments per trial; resources depend on the trial and on params."""
        params = params or {}
        gpus, steps = int(params.get("gpus", 0)), int(params.get("steps", 200))
        return [
            {
                "env": {"TRIAL": str(i), "LR": str(lr), "STEPS": str(steps)},
                "resources": {"cpus": cpus, "memory": memory, "shm_size": shm, "gpus": gpus},
            }
            for i, (lr, cpus, memory, shm) in enumerate(TRIALS)
        ]

    results = ContainerOperator.partial(
        task_id="trial",
        image="{{ params.image }}",
        command=["python3", "-c", TRIAL_SCRIPT],
        docker_kwargs={"gpu_fallback": "cpu"},
        kubernetes_kwargs={"namespace": "{{ params.namespace }}", "image_pull_policy": "IfNotPresent"},
    ).expand_kwargs(trials())

    @task
    def select_best(results: list[dict]) -> dict:
        best = min(results, key=lambda r: r["loss"])
        log.info(
            "best trial %s (lr=%s) loss=%.6f on %s", best["trial"], best["lr"], best["loss"], best["device"]
        )
        return best

    select_best(results.output)


mlops_gpu_container()
