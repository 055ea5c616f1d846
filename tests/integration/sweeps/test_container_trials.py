"""Container trials on a real Docker engine and as local processes, through ``airflow dags test``.

One mapped task runs a batch of seven trials in turn (``dags/container_trial_dags.py``): four
succeed with their own resources, three fail on purpose (exit 1, OOM kill, malformed result)
and become failed records with their reason and last output lines. Then, in-process against the
engine: a killed task stops the running trial's container, and a retry after a dead worker
reattaches to the container of the trial it was running instead of starting a second one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_mlops_provider.sweeps import ContainerTrialOperator, make_trial
from airflow_mlops_provider.sweeps.plan import planned_trials
from tests.conftest import REPO_ROOT
from tests.integration.docker.conftest import (  # noqa: F401 (cli is a fixture)
    cli,
    make_context,
    task_containers,
    unique_dag_id,
    wait_for_running,
)
from tests.integration.sweeps.dags.container_trial_dags import SPACES

pytestmark = [pytest.mark.integration]

NESTED_WARNING = "cannot be called outside of the Task Runner"
MIB = 1 << 20


def _trials_by_kind() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for trial in planned_trials(SPACES, strategy="grid"):
        by_kind.setdefault(trial["hparams"]["kind"], []).append(trial)
    return by_kind


def _records(run) -> tuple[dict, dict[str, dict]]:
    assert run.state == "success", run.tail()
    (batch,) = run.report["batches"]  # ONE mapped task ran every trial
    return run.report["summary"], {r["trial_id"]: r for r in batch}


def _check_successes(summary: dict, records: dict[str, dict], ok: list[dict], ranked: list[dict]) -> None:
    leaders = [r for r in summary["leaderboard"] if r["rank"]]
    assert [r["hparams"]["x"] for r in leaders] == [t["hparams"]["x"] for t in ranked]  # loss = x, best first
    assert summary["best"]["hparams"] == {"kind": "ok", "x": 1}
    for trial in ok:
        record = records[trial["trial_id"]]
        outputs = record["outputs"]
        assert record["status"] == "success"
        assert record["metrics"] == {"loss": float(trial["hparams"]["x"])}
        assert outputs["trial"] == trial  # $MLOPS_TRIAL: the trial as JSON, its resources included
        assert outputs["argv"] == ["--x", str(trial["hparams"]["x"]), "--kind", "ok"]  # {{ trial.hparams.x }}
        assert outputs["greeting"] == f"hello from trial {trial['trial_id']}"  # templated env


@pytest.mark.docker
def test_a_batch_of_docker_trials_runs_in_one_task_in_turn(run_sweep, base_image, cli, tmp_path):  # noqa: F811 (fixture imported above)
    dag_id = "container_trials_docker"
    leases = tmp_path / "leases"
    leases.mkdir()
    run = run_sweep(dag_id, MLOPS_TEST_IMAGE=base_image, AIRFLOW__MLOPS__GPU_LEASE_DIR=str(leases))
    summary, records = _records(run)
    by_kind = _trials_by_kind()
    assert len(records) == 7
    _check_successes(summary, records, by_kind["ok"], ranked=by_kind["ok"])

    # Each trial in its own container, one after the other.
    ok = sorted((records[t["trial_id"]]["outputs"] for t in by_kind["ok"]), key=lambda o: o["started"])
    assert len({o["host"] for o in ok}) == 4
    for before, after in zip(ok, ok[1:]):
        assert after["started"] >= before["ended"]

    # Per-trial resources reach the container: the cgroup limits it sees.
    for trial in by_kind["ok"]:
        outputs = records[trial["trial_id"]]["outputs"]
        assert int(outputs["memory_limit"]) == trial["resources"]["memory"]
        quota = outputs["cpu_quota"].split()[
            0
        ]  # cgroup v2: "50000 100000" or "max 100000"; v1: "50000" or "-1"
        assert quota in (("50000",) if trial["resources"].get("cpus") == 0.5 else ("max", "-1"))
        gpu = trial["resources"].get("gpus")
        assert outputs["devices"] in (("0", "1") if gpu else (None,))  # set by the NVIDIA hook

    # Three trials failed on purpose, each with its reason and last output lines; the sweep went on.
    assert summary["n_succeeded"] == 4
    assert summary["n_failed"] == 3
    (exit1,) = (records[t["trial_id"]] for t in by_kind["exit1"])
    assert exit1["status"] == "failed"
    assert exit1["error"].endswith("exited with code 1")
    assert "diverged: loss is nan" in exit1["tail"]
    (oom,) = (records[t["trial_id"]] for t in by_kind["oom"])
    assert oom["error"].endswith(
        "exited with code 137 (OOM-killed: it ran out of memory); its memory limit is 32Mi"
    )
    assert oom["tail"][-1] == "allocating 256 MiB"
    (malformed,) = (records[t["trial_id"]] for t in by_kind["malformed"])
    assert "wrote a result file ($MLOPS_RESULT_FILE) that is not JSON" in malformed["error"]
    assert "first bytes: '{not json'" in malformed["error"]
    assert malformed["tail"][-1] == "writing a broken result"

    assert task_containers(cli, dag_id) == []  # docker ps -a: nothing left
    assert NESTED_WARNING not in run.output


def test_the_local_runtime_runs_the_same_trials_as_processes(run_sweep):
    run = run_sweep("container_trials_local")
    summary, records = _records(run)
    by_kind = _trials_by_kind()
    assert len(records) == 7
    # The local runtime enforces no resources: the trial that is OOM-killed on Docker succeeds here.
    _check_successes(summary, records, by_kind["ok"], ranked=by_kind["ok"] + by_kind["oom"])
    assert len({records[t["trial_id"]]["outputs"]["host"] for t in by_kind["ok"]}) == 1  # all on the worker
    (exit1,) = (records[t["trial_id"]] for t in by_kind["exit1"])
    assert "exited with code 1" in exit1["error"]
    assert "diverged: loss is nan" in exit1["tail"]
    (malformed,) = (records[t["trial_id"]] for t in by_kind["malformed"])
    assert "that is not JSON" in malformed["error"]
    assert malformed["tail"][-1] == "writing a broken result"
    assert NESTED_WARNING not in run.output


# -- in-process, against the engine: kill and reattach ------------------------------------------

SLOW = (
    "import json, os, time; print('training', flush=True); "
    "deadline = time.time() + float(os.environ['SLEEP']); "
    "exec('while not os.path.exists(\\'/tmp/go\\') and time.time() < deadline: time.sleep(0.2)'); "
    "json.dump({'loss': 1.0}, open(os.environ['MLOPS_RESULT_FILE'], 'w')); print('done', flush=True)"
)
WORKER = """
import sys
from airflow_mlops_provider.sweeps import ContainerTrialOperator, make_trial
from tests.integration.docker.conftest import make_context
dag_id, image, code = sys.argv[1:4]
op = ContainerTrialOperator(task_id="train", runtime="docker", image=image, command=["python3", "-c", code],
                            env={"SLEEP": "60"}, trials=[make_trial({"x": 1})],
                            docker_kwargs={"mount_tmp_dir": False})
op.execute(make_context(dag_id, task_id="train"))
"""


def _operator(image: str, sleep: int) -> ContainerTrialOperator:
    return ContainerTrialOperator(
        task_id="train",
        runtime="docker",
        image=image,
        command=["python3", "-c", SLOW],
        env={"SLEEP": str(sleep)},
        trials=[make_trial({"x": 1})],
        docker_kwargs={"mount_tmp_dir": False},
    )


@pytest.mark.docker
def test_a_killed_task_stops_and_removes_the_running_trial_container(base_image, cli):  # noqa: F811 (fixture imported above)
    dag_id = unique_dag_id("trial_kill")
    op = _operator(base_image, sleep=60)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["records"] = op.execute(make_context(dag_id, task_id="train"))
        except BaseException as err:  # what the task would fail with
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    running = wait_for_running(cli, dag_id)
    assert running["Labels"]["airflow-mlops.trial_id"] == make_trial({"x": 1})["trial_id"]
    op.on_kill()
    thread.join(timeout=60)
    assert not thread.is_alive()
    # Not a failed trial: the task itself was killed (Airflow decides what comes next).
    assert isinstance(outcome.get("error"), AirflowException), outcome
    assert "was stopped because the task was killed" in str(outcome["error"])
    assert task_containers(cli, dag_id) == []


@pytest.mark.docker
def test_a_retry_after_a_dead_worker_reattaches_to_the_trial_container(base_image, cli):  # noqa: F811 (fixture imported above)
    dag_id = unique_dag_id("trial_reattach")
    since = int(time.time())
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, dag_id, base_image, SLOW],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        running = wait_for_running(cli, dag_id)
    finally:
        worker.send_signal(signal.SIGKILL)  # the worker dies: nothing cleans up
        worker.wait(timeout=30)
    assert task_containers(cli, dag_id)[0]["Id"] == running["Id"]  # left running
    subprocess.run(["docker", "exec", running["Id"], "touch", "/tmp/go"], check=True)

    records = _operator(base_image, sleep=60).execute(make_context(dag_id, task_id="train", try_number=2))
    assert [(r["status"], r["metrics"]) for r in records] == [("success", {"loss": 1.0})]
    created = cli.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"airflow-mlops.dag_id={dag_id}"},
    )
    assert [e["id"] for e in created] == [running["Id"]]  # one container for the trial, ever
    assert task_containers(cli, dag_id) == []
