"""Halving sweeps whose trials resume from their checkpoint in the next rung (airflow DAG).

Each trial "trains" ``budget`` steps in total: it restores its step count from
``$MLOPS_CHECKPOINT_DIR/state.json``, runs the steps still missing, saves the new count, and
appends ``<budget> <steps executed now>`` to ``$SWEEP_RESULT_DIR/counts/<trial_id>.txt``. With
resume, a trial promoted to budget 3 executes 3 steps over its two rungs, not 1 + 3.

- ``ckpt_halving_python``: Python trials, halving(1, 3, eta=3) over 3 trials;
- ``ckpt_halving_docker``: container trials, halving(1, 2, eta=2) over 2 trials.
Both checkpoint to ``$CKPT_URI`` through the aws connection ``ckpt_s3`` and delete the losers'
checkpoints after the selection.

``ckpt_halving_python`` also runs ``slow_train``, one Python trial of RETRY_STEPS steps that
checkpoints to the local path ``$CKPT_LOCAL_URI`` (given as a template): its first try hangs
after step RETRY_KILL_AT until ``execution_timeout`` kills it, and the retry resumes from the
checkpoint uploaded as it died. Each executed step appends ``<try> <step>`` to
``$SWEEP_RESULT_DIR/retry.txt``. (One DAG run for both: ``airflow dags test`` costs ~15 s to start.)
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import container_trials, halving, halving_sweep, trial_task

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 1, "high": 10},
}
URI = os.environ.get("CKPT_URI", "")
IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
RESULTS = os.environ.get("SWEEP_RESULT_DIR", "/tmp")


@trial_task(checkpoint=URI, checkpoint_conn_id="ckpt_s3")
def train(
    x: float,
    y: int,
    budget: float | None = None,
    trial_id: str | None = None,
    checkpoint_dir: str | None = None,
) -> dict:
    state_file = Path(checkpoint_dir) / "state.json"
    assert os.environ["MLOPS_CHECKPOINT_DIR"] == checkpoint_dir
    done = json.loads(state_file.read_text())["steps"] if state_file.exists() else 0
    executed = int(budget) - done
    state_file.write_text(json.dumps({"steps": int(budget)}))
    counts = Path(RESULTS, "counts")
    counts.mkdir(parents=True, exist_ok=True)
    with open(counts / f"{trial_id}.txt", "a") as out:
        out.write(f"{int(budget)} {executed}\n")
    return {"loss": (x - 0.3) ** 2 + ((y - 7) / 10) ** 2 + 0.5 / budget}


CONTAINER_TRIAL = """
import json, os, pathlib
budget = int(float(os.environ["MLOPS_BUDGET"]))
trial = json.loads(os.environ["MLOPS_TRIAL"])
state = pathlib.Path(os.environ["MLOPS_CHECKPOINT_DIR"]) / "state.json"
done = json.loads(state.read_text())["steps"] if state.exists() else 0
state.write_text(json.dumps({"steps": budget}))
with open(f"/counts/{trial['trial_id']}.txt", "a") as out:
    out.write(f"{budget} {budget - done}\\n")
h = trial["hparams"]
pathlib.Path(os.environ["MLOPS_RESULT_FILE"]).write_text(json.dumps({"loss": (h["x"] - 0.3) ** 2 + 0.5 / budget}))
"""


@task
def report(result: dict, name: str | None = None) -> None:
    context = get_current_context()
    out = {"summary": result, "run_id": context["run_id"]}
    Path(RESULTS, f"{name or context['dag'].dag_id}.json").write_text(json.dumps(out, default=str))


def _dag(dag_id: str, n_trials: int):
    return dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params={
            **sweep_params(search_space=SPACE, metric="loss", mode="min", seed=5, n_trials=n_trials),
            "ckpt_local_uri": os.environ.get("CKPT_LOCAL_URI", ""),
        },
    )


RETRY_STEPS, RETRY_KILL_AT, RETRY_STEP_SECONDS = 30, 10, 0.1


def advance(value: int, step: int) -> int:
    return (value * 31 + step * step + 7) % 1_000_003


def write_atomic(directory: Path, name: str, data: dict) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, directory / name)


@trial_task(
    checkpoint="{{ params.ckpt_local_uri }}",
    checkpoint_interval=0.3,
    retries=1,
    retry_delay=datetime.timedelta(seconds=0),
    execution_timeout=datetime.timedelta(seconds=6),
)
def slow_train(x: float) -> dict:
    ckpt = Path(os.environ["MLOPS_CHECKPOINT_DIR"])
    try_number = get_current_context()["ti"].try_number
    state_file = ckpt / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"step": 0, "value": 1}
    while state["step"] < RETRY_STEPS:
        if try_number == 1 and state["step"] == RETRY_KILL_AT:
            time.sleep(120)  # "hangs": execution_timeout ends the try
        time.sleep(RETRY_STEP_SECONDS)
        step = state["step"] + 1
        state = {"step": step, "value": advance(state["value"], step)}
        with open(Path(RESULTS, "retry.txt"), "a") as out:
            out.write(f"{try_number} {step}\n")
        write_atomic(ckpt, "state.json", state)
        write_atomic(ckpt, "mlops-checkpoint.json", {"step": step})
    return {"loss": x, "value": state["value"]}


@_dag("ckpt_halving_python", 3)
def ckpt_halving_python():
    report(
        halving_sweep(
            train, halving(min_budget=1, max_budget=3, eta=3), n_trials=3, delete_checkpoints="losers"
        )
    )
    records = slow_train(trials=[{"trial_id": "t-retry", "hparams": {"x": 0.5}}])
    report.override(task_id="report_retry")({"records": records}, name="retry")


def _docker_trials(batches):
    from docker.types import Mount

    counts = str(Path(RESULTS, "counts"))
    Path(counts).mkdir(parents=True, exist_ok=True)
    os.chmod(counts, 0o777)
    return container_trials(
        task_id="train",
        batches=batches,
        runtime="docker",
        image=IMAGE,
        command=["python3", "-c", CONTAINER_TRIAL],
        checkpoint=URI,
        checkpoint_conn_id="ckpt_s3",
        docker_kwargs={
            "mounts": [Mount(target="/counts", source=counts, type="bind")],
            "mount_tmp_dir": False,
        },
    )


@_dag("ckpt_halving_docker", 2)
def ckpt_halving_docker():
    report(
        halving_sweep(
            _docker_trials,
            halving(min_budget=1, max_budget=2, eta=2),
            n_trials=2,
            delete_checkpoints="losers",
            checkpoint=URI,
            checkpoint_conn_id="ckpt_s3",
        )
    )


ckpt_halving_python()
ckpt_halving_docker()
