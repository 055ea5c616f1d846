"""Container-trial sweeps for the integration tests: the same seven trials on Docker and as local processes.

``plan_sweep`` (tracking off) puts all the trials in one batch, so ONE mapped task runs them in
turn. Four trials succeed, with their own resources (the container reports the memory and CPU
limits and the GPU devices it sees); three fail on purpose: one exits 1, one allocates far past its memory limit
(OOM-killed on Docker; the local runtime enforces no limit, so there it succeeds), one writes a
malformed result. ``report`` writes the select-best result and every trial's record to
``$SWEEP_RESULT_DIR/<dag_id>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")

SPACES = [
    {"kind": "ok", "x": [1, 2, 3], "resources": {"memory": "96Mi"}},
    {"kind": "ok", "x": 4, "resources": {"memory": "64Mi", "cpus": 0.5, "gpus": 1}},
    {"kind": "exit1", "x": 10},
    {"kind": "oom", "x": 11, "resources": {"memory": "32Mi"}},
    {"kind": "malformed", "x": 12},
]

TRIAL = """
import json, os, pathlib, socket, sys, time
started = time.time()
trial = json.loads(os.environ["MLOPS_TRIAL"])
kind = trial["hparams"]["kind"]
print(f"trial {os.environ['MLOPS_TRIAL_ID']} kind={kind} argv={sys.argv[1:]}", flush=True)


def first(*paths):
    for path in paths:
        try:
            return pathlib.Path(path).read_text().strip()
        except OSError:
            pass
    return None


out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
if kind == "exit1":
    print("diverged: loss is nan", file=sys.stderr, flush=True)
    sys.exit(1)
if kind == "oom":
    print("allocating 256 MiB", flush=True)
    block = b"x" * (256 << 20)
    print("allocated", len(block), flush=True)
if kind == "malformed":
    print("writing a broken result", flush=True)
    out.write_text("{not json")
    sys.exit(0)
time.sleep(0.2)
out.write_text(json.dumps({
    "loss": float(trial["hparams"]["x"]),
    "outputs": {
        "argv": sys.argv[1:],
        "trial": trial,
        "greeting": os.environ.get("GREETING"),
        "memory_limit": first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "cpu_quota": first("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        "host": socket.gethostname(),
        "devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "started": started,
        "ended": time.time(),
    },
}))
"""


@task
def report(summary: dict, results: list) -> None:
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if out_dir:
        context = get_current_context()
        data = {"summary": summary, "batches": [list(batch) for batch in results]}
        (Path(out_dir) / f"{context['dag'].dag_id}.json").write_text(json.dumps(data))


def _sweep(dag_id: str, runtime: str):
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(search_space=SPACES[0], strategy="grid", metric="loss", mode="min"),
        tags=["mlops", "test"],
    )
    def sweep():
        batches = plan_sweep(search_space=SPACES, mlflow_conn_id=None, max_parallel_tasks=1)
        results = container_trials(
            task_id="train",
            batches=batches,
            runtime=runtime,
            image=IMAGE,
            command=[
                "python3",
                "-c",
                TRIAL,
                "--x",
                "{{ trial.hparams.x }}",
                "--kind",
                "{{ trial.hparams.kind }}",
            ],
            env={"GREETING": "hello from trial {{ trial.trial_id }}"},
            docker_kwargs={"host_gpus": 2},  # the trial with a GPU gets one of these two devices
        )
        report(select_best_trial(results, batches), results)

    return sweep()


container_trials_docker = _sweep("container_trials_docker", "docker")
container_trials_local = _sweep("container_trials_local", "local")
