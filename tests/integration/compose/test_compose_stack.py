"""Opt-in: build the stack's images (MLOPS_COMPOSE_BUILD=1) and run the stack (MLOPS_COMPOSE_UP=1).

Both are too heavy for CI (about 15 minutes of builds on 2 cores, ~3 GB of images, then nine
containers). ``deploy/build_stack_images.sh`` must have run before MLOPS_COMPOSE_UP=1 alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.integration.compose.conftest import COMPOSE_FILE, compose_command, compose_env

IMAGES = {
    "mlops-stack-postgres:latest": ["pg_isready", "--version"],
    "mlops-stack-redis:latest": ["redis-server", "--version"],
    "mlops-stack-s3:latest": ["python3", "-c", "import moto; print('moto', moto.__version__)"],
    "mlops-stack-mlflow:latest": ["mlflow", "--version"],
    "mlops-stack-airflow:latest": [
        "python3",
        "-c",
        "import airflow, airflow_mlops_provider, psycopg2, feast, mlflow, docker; "
        "print('airflow', airflow.__version__, 'provider', airflow_mlops_provider.__version__)",
    ],
}


def _enabled(var: str) -> bool:
    return os.environ.get(var, "").lower() in {"1", "true", "yes"}


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(
    not _enabled("MLOPS_COMPOSE_BUILD"), reason="set MLOPS_COMPOSE_BUILD=1 to build the stack"
)
def test_stack_images_build_from_the_local_base(base_image, report_figure):
    compose_command()
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy/build_stack_images.sh"), base_image],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report_figure(f"compose: stack images built in {time.monotonic() - start:.0f}s")
    for line in proc.stdout.splitlines():
        if " built in " in line:
            report_figure(f"compose: {line.strip()}")
    for image, command in IMAGES.items():
        run = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", command[0], image, *command[1:]],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"{image}: {run.stderr[-2000:]}"
        assert run.stdout.strip(), image


class Stack:
    """One ``docker-compose`` project on free loopback ports."""

    def __init__(self) -> None:
        self.ports = {
            "MLOPS_AIRFLOW_PORT": free_port(),
            "MLOPS_MLFLOW_PORT": free_port(),
            "MLOPS_REDIS_PORT": free_port(),
            "MLOPS_S3_PORT": free_port(),
        }
        # A fresh working directory for the example (bind-mounted at the same path everywhere).
        self.home = tempfile.mkdtemp(prefix="mlops-stack-")
        os.chmod(self.home, 0o777)
        self.env = compose_env(MLOPS_STACK_HOME=self.home, **{k: str(v) for k, v in self.ports.items()})
        self.base = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", "mlopsstacktest"]

    def compose(
        self, *args: str, timeout: float = 900, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, env=self.env, cwd=REPO_ROOT, timeout=timeout
        )
        if check:
            assert proc.returncode == 0, f"docker-compose {' '.join(args)}: {proc.stderr[-4000:]}"
        return proc

    def health(self) -> dict[str, str]:
        ids = self.compose("ps", "-q").stdout.split()
        states = {}
        for cid in ids:
            out = subprocess.run(
                [
                    "docker",
                    "inspect",
                    "-f",
                    "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    cid,
                ],
                capture_output=True,
                text=True,
            ).stdout.split()
            states[out[0].lstrip("/")] = out[2] if len(out) > 2 else out[1]
        return states

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        url = f"http://127.0.0.1:{self.ports['MLOPS_AIRFLOW_PORT']}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def _dag_exists(stack: Stack, dag_id: str, token: str) -> bool:
    try:
        stack.api("GET", f"/api/v2/dags/{dag_id}", token=token)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise
    return True


@pytest.fixture
def stack(docker_engine):
    for image in IMAGES:
        probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if probe.returncode != 0:
            pytest.fail(f"{image} is missing: run deploy/build_stack_images.sh first")
    running = Stack()
    try:
        running.compose("up", "-d", "--no-build")
        yield running
    finally:
        logs = running.compose("logs", "--tail", "40", check=False).stdout
        running.compose("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(running.home, ignore_errors=True)
        print(logs[-8000:])


def _wait_healthy(stack: Stack, report_figure: Any) -> str:
    """Wait until the 8 long-running services are healthy; return an API token."""
    start = time.monotonic()
    deadline = start + 900
    while True:
        states = stack.health()
        long_running = {k: v for k, v in states.items() if "airflow-init" not in k}
        if len(long_running) == 8 and all(v == "healthy" for v in long_running.values()):
            break
        assert time.monotonic() < deadline, f"not healthy after 900 s: {states}"
        assert not any(v in {"unhealthy", "exited", "dead"} for v in long_running.values()), states
        time.sleep(10)
    report_figure(f"compose: 8 services healthy {time.monotonic() - start:.0f}s after `up -d`")
    return stack.api("POST", "/auth/token", {"username": "admin", "password": "admin"})["access_token"]


def _poll(probe: Any, timeout: float, what: str) -> Any:
    """Call ``probe`` every 5 s until it returns something truthy; return that, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(5)


def _finished_state(stack: Stack, dag_id: str, run_id: str, token: str) -> str | None:
    state = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=token)["state"]
    return state if state in {"success", "failed"} else None


def _wait_run(stack: Stack, dag_id: str, run_id: str, token: str, timeout: float) -> str:
    return _poll(
        lambda: _finished_state(stack, dag_id, run_id, token),
        timeout,
        f"{dag_id} run {run_id} did not finish",
    )


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(not _enabled("MLOPS_COMPOSE_UP"), reason="set MLOPS_COMPOSE_UP=1 to run the stack")
def test_stack_turns_healthy_and_runs_a_dag(stack, report_figure, monkeypatch):
    token = _wait_healthy(stack, report_figure)
    # The dag-processor parses dags/ first.
    _poll(lambda: _dag_exists(stack, "mlops_smoke", token), 300, "mlops_smoke was not parsed")
    stack.api("PATCH", "/api/v2/dags/mlops_smoke", {"is_paused": False}, token=token)
    run = stack.api("POST", "/api/v2/dags/mlops_smoke/dagRuns", {"logical_date": None}, token=token)
    started = time.monotonic()
    state = _wait_run(stack, "mlops_smoke", run["dag_run_id"], token, timeout=600)
    assert state == "success"
    report_figure(f"compose: mlops_smoke ran on the stack in {time.monotonic() - started:.0f}s")

    # MLflow: a run with an artifact goes through the server to the S3 store (boto3 server-side).
    import mlflow

    # Presigned download URLs name http://s3:9000, which only resolves inside the stack's network.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{stack.ports['MLOPS_MLFLOW_PORT']}")
    experiment = mlflow.set_experiment("compose-stack-test")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    with mlflow.start_run() as active:
        mlflow.log_dict({"ok": True}, "check.json")
    loaded = mlflow.artifacts.load_dict(f"runs:/{active.info.run_id}/check.json")
    assert loaded == {"ok": True}
    listing = subprocess.run(
        [
            *stack.base,
            "exec",
            "-T",
            "mlflow",
            "python3",
            "-c",
            "import boto3, os; s3 = boto3.client('s3', endpoint_url=os.environ['MLFLOW_S3_ENDPOINT_URL']); "
            "print([o['Key'] for o in s3.list_objects_v2(Bucket='mlflow').get('Contents', [])])",
        ],
        capture_output=True,
        text=True,
        env=stack.env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert f"{active.info.run_id}/artifacts/check.json" in listing.stdout, listing.stdout + listing.stderr


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(not _enabled("MLOPS_COMPOSE_UP"), reason="set MLOPS_COMPOSE_UP=1 to run the stack")
def test_stack_runs_the_training_pipeline_and_the_deploy_dag_fires(stack, report_figure):
    """The example pipeline on the stack (trials in containers on the host's engine, MLflow on
    PostgreSQL + S3, Feast online store on Redis), then the deploy DAG from the model's Asset."""
    import mlflow

    token = _wait_healthy(stack, report_figure)
    pipeline, deploy = "mlops_training_pipeline", "mlops_deploy_on_new_champion"
    _poll(
        lambda: _dag_exists(stack, pipeline, token) and _dag_exists(stack, deploy, token),
        300,
        "the example DAGs were not parsed",
    )
    # Unpausing the weekly pipeline makes the scheduler run last week's interval (catchup=False).
    for dag_id in (deploy, pipeline):
        stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=token)
    started = time.monotonic()
    (run,) = _poll(
        lambda: stack.api("GET", f"/api/v2/dags/{pipeline}/dagRuns", token=token)["dag_runs"],
        300,
        "the scheduler created no run of the weekly pipeline",
    )
    assert run["run_type"] == "scheduled", run
    state = _wait_run(stack, pipeline, run["dag_run_id"], token, timeout=1800)
    tis = stack.api("GET", f"/api/v2/dags/{pipeline}/dagRuns/{run['dag_run_id']}/taskInstances", token=token)
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tis["task_instances"]}
    assert state == "success", states
    trials = [k for k in states if k[0] == "train"]
    assert len(trials) == 6, states
    assert all(states[k] == "success" for k in trials), states
    assert states[("deploy", -1)] == "success", states
    report_figure(f"compose: mlops_training_pipeline ran on the stack in {time.monotonic() - started:.0f}s")

    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{stack.ports['MLOPS_MLFLOW_PORT']}")
    champion = client.get_model_version_by_alias("churn_classifier", "champion")
    production = client.get_model_version_by_alias("churn_classifier", "production")
    assert champion.version == production.version == "1"

    # The deploy step's Asset event schedules the deployment DAG on the stack's own scheduler.
    def finished_deploy_runs() -> list[dict[str, Any]] | None:
        runs = stack.api("GET", f"/api/v2/dags/{deploy}/dagRuns", token=token)["dag_runs"]
        return runs if runs and runs[0]["state"] in {"success", "failed"} else None

    (deploy_run,) = _poll(finished_deploy_runs, 600, f"{deploy} did not run after the Asset event")
    assert deploy_run["run_type"] == "asset_triggered", deploy_run
    assert deploy_run["state"] == "success", deploy_run
    report_figure(f"compose: {deploy} ran from the model Asset event ({deploy_run['dag_run_id']})")
