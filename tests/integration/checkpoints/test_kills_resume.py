"""Kill a checkpointed trainer at about step 30 of 60, retry it, and count every step it ever ran.

The issue's "done when", on Docker with S3 (moto), on Docker with a local path, and on the
local runtime with S3; each killed three ways: SIGTERM of the task process (the task runner's
handler: ``on_kill``), SIGKILL of the worker (and its container or process removed as well, as
when a node is lost), and ``execution_timeout`` (the task runner's own timeout). Each try is a
real process (``kill_driver.py``). After the retry:

- the trainer executed exactly ``60 + (steps since the last upload)`` steps over both tries
  (SIGTERM and timeout: the final upload leaves no steps behind);
- the result equals an uninterrupted run's;
- no container is left, and the S3 secret key is in no output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_mlops_provider.checkpoints.settings import CheckpointSettings, task_prefix
from airflow_mlops_provider.checkpoints.sync import CheckpointSync
from tests.conftest import airflow_env
from tests.support.moto_server import SECRET_KEY

pytestmark = [pytest.mark.integration, pytest.mark.docker]

HERE = Path(__file__).parent
STEPS, STEP_SECONDS, INTERVAL = 60, 0.2, 1.0
KILL_AT = 30


def uninterrupted_value() -> int:
    value = 1
    for step in range(1, STEPS + 1):
        value = (value * 31 + step * step + 7) % 1_000_003
    return value


def _steps(work: Path) -> list[int]:
    path = work / "count.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _manifest_step(uri: str, prefix: str, conn_env: dict[str, str]) -> int | None:
    settings = CheckpointSettings(uri=uri, conn_id="ckpt_s3" if uri.startswith("s3://") else None)
    old = {k: os.environ.get(k) for k in conn_env}
    os.environ.update(conn_env)
    try:
        manifest = CheckpointSync(settings.store(), prefix, Path("/nonexistent")).read_manifest()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return None if manifest is None else manifest["meta"].get("step")


def _outcome(output: str) -> str:
    """The driver's ``RESULT ...`` or ``ERROR ...`` line."""
    lines = [line for line in output.splitlines() if line.startswith(("RESULT ", "ERROR "))]
    assert lines, output[-3000:]
    return lines[-1]


def _containers(dag_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=airflow-mlops.dag_id={dag_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def _start_try(spec: dict, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "kill_driver.py"), json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_step(work: Path, proc: subprocess.Popen[str], step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_steps(work)) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the first try ended before step {step}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"the trainer did not reach step {step} in {timeout}s")


CASES = [
    (runtime, store, kill)
    for runtime, store in (("docker", "s3"), ("docker", "local"), ("local", "s3"))
    for kill in ("sigterm", "sigkill", "timeout")
]


@pytest.mark.parametrize(("runtime", "store", "kill"), CASES, ids=["-".join(c) for c in CASES])
def test_killed_at_step_30_the_retry_resumes_and_finishes(
    runtime, store, kill, moto_s3, base_image, tmp_path, airflow_db, report_figure
):
    bucket = moto_s3.make_bucket("kills")
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)
    shutil.copy(HERE / "trainer.py", work / "trainer.py")
    uri = f"s3://{bucket}/ckpt" if store == "s3" else str(tmp_path / "store")
    conn_env = moto_s3.aws_conn_uri_env("ckpt_s3") if store == "s3" else {}
    dag_id = f"kill_{kill}_{uuid.uuid4().hex[:8]}"
    identity = {
        "dag_id": dag_id,
        "run_id": "manual__2026-12-02T10:00:00+00:00",
        "task_id": "train",
        "map_index": "-1",
    }
    count_file = "/work/count.txt" if runtime == "docker" else str(work / "count.txt")
    spec = {
        "runtime": runtime,
        "image": base_image,
        "work": str(work),
        "checkpoint": uri,
        "interval": INTERVAL,
        "conn_id": "ckpt_s3" if store == "s3" else None,
        "dag_id": dag_id,
        "run_id": identity["run_id"],
        "env": {"STEPS": str(STEPS), "STEP_SECONDS": str(STEP_SECONDS), "COUNT_FILE": count_file},
    }
    env = airflow_env(
        **conn_env,
        AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR=str(tmp_path / "local"),
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
    )
    # -- the first try, killed at about step 30 ------------------------------------------------
    first_spec = {**spec, "try_number": 1}
    if kill == "timeout":
        first_spec["timeout"] = 1.5 + KILL_AT * STEP_SECONDS  # process and container start, then ~30 steps
    first = _start_try(first_spec, env)
    if kill == "timeout":
        first_out, _ = first.communicate(timeout=180)
        assert _outcome(first_out).startswith("ERROR AirflowTaskTimeout"), first_out[-3000:]
    else:
        _wait_for_step(work, first, KILL_AT)
        if kill == "sigterm":
            first.send_signal(signal.SIGTERM)
            first_out, _ = first.communicate(timeout=60)
            assert _outcome(first_out).startswith("ERROR"), first_out[-3000:]
        else:
            os.killpg(first.pid, signal.SIGKILL)  # the worker, with everything in its session
            first_out, _ = first.communicate(timeout=60)
            assert first.returncode == -signal.SIGKILL
            # The node is gone: its container or trainer process goes with it.
            for cid in _containers(dag_id):
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)
            for pid_file in work.glob("pid-*"):
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
    executed_first = len(_steps(work))
    uploaded = _manifest_step(uri, task_prefix(identity), conn_env)
    assert uploaded is not None, f"no checkpoint was uploaded before the kill:\n{first_out[-3000:]}"
    assert uploaded > 0, first_out[-3000:]
    assert KILL_AT // 2 <= executed_first < STEPS, executed_first
    if kill in ("sigterm", "timeout"):
        # The final upload ran after the trainer stopped: nothing is lost.
        assert uploaded == executed_first, (uploaded, executed_first, first_out[-3000:])
    else:
        # SIGKILL: what the last periodic upload had; at most one interval of steps behind.
        assert executed_first - uploaded <= INTERVAL / STEP_SECONDS + 2, (uploaded, executed_first)

    # -- the retry -----------------------------------------------------------------------------
    retry = _start_try({**spec, "try_number": 2}, env)
    retry_out, _ = retry.communicate(timeout=180)
    last = _outcome(retry_out)
    assert last.startswith("RESULT "), retry_out[-3000:]
    assert json.loads(last[len("RESULT ") :]) == {"value": uninterrupted_value(), "steps": STEPS}
    assert f"Restored checkpoint from {uri.rstrip('/')}/{task_prefix(identity)}" in retry_out
    assert f"step {uploaded}" in retry_out
    total = len(_steps(work))
    assert total == STEPS + (executed_first - uploaded), (total, executed_first, uploaded)
    # Steps are resumed where the checkpoint left them: the retry starts at uploaded + 1.
    assert _steps(work)[executed_first] == uploaded + 1
    assert _containers(dag_id) == []
    assert SECRET_KEY not in first_out + retry_out
    report_figure(
        f"checkpoint kill {runtime}+{store} {kill}: killed at step {executed_first}, restored step {uploaded}, "
        f"{total} steps executed in total (uninterrupted: {STEPS})"
    )
