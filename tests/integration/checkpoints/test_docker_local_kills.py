"""Kill a checkpointed trainer at about step 30 of 60, retry it, and count every step it ever ran.

The issue's "done when", on Docker with S3 (moto), on Docker with a local path and on the local
runtime with S3, each killed three ways:

- SIGTERM of the task process (the task runner's handler: ``on_kill``, then the ``finally``);
- SIGKILL of the worker, its container or trainer process removed as well (a lost node);
- ``execution_timeout`` (the task runner's own ``_run_execute_callable``).

Each try is a real process (``kill_driver.py``, as the task runner runs ``execute``), plus one
more Docker+S3 SIGTERM case through two real ``airflow tasks test`` processes. The cases run
side by side (the trainer mostly sleeps), in one module fixture; the tests then read what it
measured. After the retry (try 2 of the same dag, run, task and map index):

- the trainer executed ``60 + (steps since the last upload)`` steps over both tries, and the
  retry started at the step the checkpoint held;
- the result equals an uninterrupted run's (the same trainer, run once without a kill);
- no container is left;
- ``checkpoint_retention``: the SIGKILL cases' retries use ``"delete_on_success"`` and leave
  nothing under the prefix; the others ``"keep"`` the final step;
- the moto secret key is in no output, in the container's configuration, or in a rendered field.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops_provider.checkpoints.settings import CONTAINER_CHECKPOINT_DIR, task_prefix
from tests.conftest import VENV_BIN, airflow_env
from tests.support.moto_server import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.integration, pytest.mark.docker]

HERE = Path(__file__).parent
REPO = Path(__file__).resolve().parents[3]
STEPS, STEP_SECONDS, INTERVAL, KILL_AT = 60, 0.2, 1.0, 30
CONN_ID = "ckpt_s3"
RUN_ID = "manual__2026-12-02T10:00:00+00:00"
#: ``airflow tasks test`` runs each try in a temporary DAG run of its own (a new run id, deleted
#: afterwards): its two tries share the checkpoint through ``checkpoint_prefix``.
CLI_PREFIX = "kill-cli/train"

CLI_DAG = """
from __future__ import annotations
import pendulum
from docker.types import Mount
from airflow.sdk import dag
from airflow_mlops_provider.operators.docker import GpuDockerOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def d():
    GpuDockerOperator(
        task_id="train", image={image!r}, command=["python3", "/work/trainer.py"],
        mounts=[Mount(target="/work", source={work!r}, type="bind")], mount_tmp_dir=False,
        stop_grace_period=1, env={env!r},
        checkpoint="{{{{ params.ckpt }}}}", params={{"ckpt": {uri!r}}},
        checkpoint_interval={interval!r}, checkpoint_conn_id={conn_id!r}, checkpoint_prefix={prefix!r},
    )
d()
"""


@dataclass
class Case:
    """One kill-and-retry, and what was measured of it."""

    runtime: str
    store: str
    kill: str
    root: Path
    cli: bool = False
    dag_id: str = ""
    uri: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    killed: bool = False
    first_out: str = ""
    retry_out: str = ""
    executed_first: int = 0
    uploaded: int | None = None
    uploads_first: int = 0
    first_rc: int | None = None
    local_dir: Path | None = None
    result: Any = None
    inspect: dict[str, Any] | None = None
    left_keys: list[str] = field(default_factory=list)
    containers_left: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.store}-{self.kill}{'-cli' if self.cli else ''}"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def retention(self) -> str:
        return "delete_on_success" if self.kill == "sigkill" else "keep"

    @property
    def prefix(self) -> str:
        if self.cli:
            return f"{self.dag_id}/{CLI_PREFIX}"
        return task_prefix({"dag_id": self.dag_id, "run_id": RUN_ID, "task_id": "train", "map_index": "-1"})

    def steps(self) -> list[int]:
        path = self.work / "count.txt"
        return [int(line) for line in path.read_text().split()] if path.exists() else []


CASES = [
    (runtime, store, kill)
    for runtime, store in (("docker", "s3"), ("docker", "local"), ("local", "s3"))
    for kill in ("sigterm", "sigkill", "timeout")
]
NAMES = [*("-".join(c) for c in CASES), "docker-s3-sigterm-cli"]


def _containers(dag_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=airflow-mlops.dag_id={dag_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def _start(case: Case, try_number: int, env: dict[str, str], image: str) -> None:
    """Start one try of ``case`` (its output goes to a file: many run at once)."""
    case.log = case.root / f"try{try_number}.log"
    count_file = "/work/count.txt" if case.runtime == "docker" else str(case.work / "count.txt")
    trainer_env = {
        "STEPS": str(STEPS),
        "STEP_SECONDS": str(STEP_SECONDS),
        "COUNT_FILE": count_file,
        "RESULT_COPY": "/work/result.json" if case.runtime == "docker" else str(case.work / "result.json"),
    }
    if case.cli:
        folder = case.root / "dags"
        folder.mkdir(exist_ok=True)
        (folder / "d.py").write_text(
            CLI_DAG.format(
                dag_id=case.dag_id,
                image=image,
                work=str(case.work),
                env=trainer_env,
                uri=case.uri,
                interval=INTERVAL,
                conn_id=CONN_ID,
                prefix=case.prefix,
            )
        )
        argv = [str(VENV_BIN / "airflow"), "tasks", "test", case.dag_id, "train"]
        env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)}
    else:
        spec = {
            "runtime": case.runtime,
            "image": image,
            "work": str(case.work),
            "checkpoint": case.uri,
            "interval": INTERVAL,
            "conn_id": CONN_ID if case.store == "s3" else None,
            "retention": case.retention if try_number > 1 else "keep",
            "dag_id": case.dag_id,
            "run_id": RUN_ID,
            "try_number": try_number,
            "env": trainer_env,
        }
        if case.kill == "timeout" and try_number == 1:
            # The process and container start, then about 30 steps (fewer on a loaded machine).
            spec["timeout"] = 3.0 + KILL_AT * STEP_SECONDS
        argv = [sys.executable, str(HERE / "kill_driver.py"), json.dumps(spec)]
    with open(case.log, "wb") as out:
        case.proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _read(case: Case) -> str:
    assert case.log is not None
    return case.log.read_text(errors="replace")


def _kill(case: Case) -> None:
    """SIGTERM the task process, or SIGKILL the worker and remove its container or trainer."""
    assert case.proc is not None
    if case.kill == "sigterm":
        case.proc.send_signal(signal.SIGTERM)
        return
    os.killpg(case.proc.pid, signal.SIGKILL)
    case.proc.wait(timeout=30)
    for cid in _containers(case.dag_id):  # the node is gone: its container goes with it
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)
    for pid_file in case.work.glob("pid-*"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _observe(case: Case) -> None:
    """While the first try runs: the container's configuration (``docker inspect``)."""
    if case.runtime == "docker":
        ids = _containers(case.dag_id)
        if ids:
            out = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True)
            case.inspect = json.loads(out.stdout)[0] if out.returncode == 0 else None
        time.sleep(0.2)


def _wait_all(cases: list[Case], *, first: bool, timeout: float = 240) -> None:
    """Wait for every try to end; in the first tries, kill each SIGTERM or SIGKILL case at step 30.

    Kills and observations run in threads of their own: a slow ``docker rm`` must not delay the
    other cases' kills.
    """
    deadline = time.monotonic() + timeout
    running = list(cases)
    helpers: list[threading.Thread] = []
    observed: set[str] = set()

    def spawn(target: Any, case: Case) -> None:
        thread = threading.Thread(target=target, args=(case,), daemon=True)
        thread.start()
        helpers.append(thread)

    while running:
        assert time.monotonic() < deadline, f"still running after {timeout}s: {[c.name for c in running]}"
        for case in list(running):
            assert case.proc is not None
            if first and case.kill in ("sigterm", "sigkill") and not case.killed:
                done = len(case.steps())
                if case.name not in observed and done >= KILL_AT - 10:
                    observed.add(case.name)
                    spawn(_observe, case)
                if done >= KILL_AT:
                    case.killed = True
                    spawn(_kill, case)
            if case.proc.poll() is not None:
                assert not first or case.kill == "timeout" or case.killed, (
                    f"{case.name}: the first try ended before the kill:\n{_read(case)[-3000:]}"
                )
                running.remove(case)
        time.sleep(0.05)
    for thread in helpers:
        thread.join(timeout=60)


def _store_keys(case: Case, s3: Any, bucket: str) -> list[str]:
    if case.store == "s3":
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"ckpt/{case.prefix}/")
        return [obj["Key"] for obj in listed.get("Contents", [])]
    root = Path(case.uri) / case.prefix
    # A write the SIGKILL cut off leaves its temporary ``*.part`` file, which no key names.
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part")]


def _manifest(case: Case, s3: Any, bucket: str) -> dict[str, Any] | None:
    if case.store == "s3":
        try:
            body = s3.get_object(Bucket=bucket, Key=f"ckpt/{case.prefix}/manifest.json")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)
    path = Path(case.uri) / case.prefix / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def _local_dir(case: Case, root: Path) -> Path:
    """The worker directory of ``case``'s checkpoint (``[mlops] checkpoint_local_dir`` = ``root``)."""
    from airflow_mlops_provider.checkpoints.session import default_local_dir
    from airflow_mlops_provider.checkpoints.settings import CheckpointSettings

    old = os.environ.get("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR")
    os.environ["AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR"] = str(root)
    try:
        return default_local_dir(CheckpointSettings(uri=case.uri), case.prefix)
    finally:
        if old is None:
            os.environ.pop("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR")
        else:
            os.environ["AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR"] = old


@pytest.fixture(scope="module")
def kills(moto_s3, base_image, tmp_path_factory, airflow_db) -> dict[str, Any]:
    bucket = moto_s3.make_bucket("kills")
    s3 = moto_s3.client()
    root = tmp_path_factory.mktemp("kills")
    token = uuid.uuid4().hex[:6]
    cases = [Case(r, s, k, root / f"{r}-{s}-{k}") for r, s, k in CASES]
    cases.append(Case("docker", "s3", "sigterm", root / "cli", cli=True))
    for case in cases:
        case.work.mkdir(parents=True)
        os.chmod(case.work, 0o777)
        shutil.copy(HERE / "trainer.py", case.work / "trainer.py")
        case.dag_id = f"kill_{case.name.replace('-', '_')}_{token}"
        case.uri = f"s3://{bucket}/ckpt" if case.store == "s3" else str(case.root / "store")
    env = airflow_env(
        **moto_s3.aws_conn_uri_env(CONN_ID),
        AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR=str(root / "local"),
        PYTHONPATH=str(REPO),
        # Each try's output goes to a file: unbuffered, so a SIGKILLed try's log lines (its uploads)
        # are all there (block-buffered, what was not flushed yet died with it).
        PYTHONUNBUFFERED="1",
    )
    # The uninterrupted run, beside the first tries: the value every retry must end with.
    plain = root / "plain"
    (plain / "ckpt").mkdir(parents=True)
    plain_run = subprocess.Popen(
        [sys.executable, str(HERE / "trainer.py")],
        env={
            **os.environ,
            "STEPS": str(STEPS),
            "STEP_SECONDS": str(STEP_SECONDS),
            "MLOPS_CHECKPOINT_DIR": str(plain / "ckpt"),
            "COUNT_FILE": str(plain / "count.txt"),
            "MLOPS_RESULT_FILE": str(plain / "result.json"),
        },
        stdout=subprocess.DEVNULL,
    )
    # -- first tries, killed at about step 30 ---------------------------------------------------
    for case in cases:
        _start(case, 1, env, base_image)
    _wait_all(cases, first=True)
    assert plain_run.wait(timeout=60) == 0
    for case in cases:
        case.first_out = _read(case)
        case.first_rc = case.proc.returncode if case.proc is not None else None
        case.local_dir = _local_dir(case, root / "local")
        case.executed_first = len(case.steps())
        manifest = _manifest(case, s3, bucket)
        case.uploaded = None if manifest is None else manifest["meta"].get("step")
        case.uploads_first = case.first_out.count("Uploaded checkpoint generation")
    # -- the retries ------------------------------------------------------------------------------
    for case in cases:
        _start(case, 2, env, base_image)
    _wait_all(cases, first=False)
    for case in cases:
        case.retry_out = _read(case)
        # A SIGKILLed worker's last manifest PUT may still be completed by the store after the
        # client died (moto under load does): what counts is the checkpoint the retry restored.
        restored = re.search(
            r"Restored checkpoint from \S+: generation \d+, .*?, step (\d+), written", case.retry_out
        )
        if case.kill == "sigkill" and restored is not None and case.uploaded is not None:
            assert int(restored.group(1)) >= case.uploaded, (restored.group(0), case.uploaded)
            case.uploaded = int(restored.group(1))
        result_file = case.work / "result.json"
        case.result = json.loads(result_file.read_text()) if result_file.exists() else None
        case.left_keys = _store_keys(case, s3, bucket)
        case.containers_left = _containers(case.dag_id)
    by_name = {case.name: case for case in cases}
    return {
        "cases": by_name,
        "plain": json.loads((plain / "result.json").read_text()),
        "s3": s3,
        "bucket": bucket,
        "local_root": root / "local",
    }


@pytest.mark.parametrize("name", NAMES)
def test_killed_at_step_30_the_retry_restores_and_finishes(name, kills, report_figure):
    case: Case = kills["cases"][name]
    first, retry = case.first_out[-3000:], case.retry_out[-3000:]
    # The first try was stopped the way the case says.
    if case.kill == "sigkill":
        assert case.first_rc == -signal.SIGKILL, (case.first_rc, first)
    elif case.kill == "timeout":
        assert "ERROR AirflowTaskTimeout" in case.first_out, first
    elif case.cli:
        assert "Task killed: stopping container" in case.first_out, first
    else:
        assert "ERROR " in case.first_out, first
    if case.kill == "timeout":  # "about step 30" depends on how fast the container started
        assert 1 <= case.executed_first < STEPS, (case.executed_first, first)
    else:
        assert KILL_AT <= case.executed_first < STEPS, (case.executed_first, first)
    # What the retry got: the final upload (SIGTERM, timeout) or the last periodic one (SIGKILL).
    assert case.uploaded is not None, f"nothing was uploaded before the kill:\n{first}"
    assert case.uploads_first >= 1, first
    if case.kill == "sigkill":
        assert 1 <= case.uploaded <= case.executed_first, (case.uploaded, case.executed_first)
    else:
        assert case.uploaded == case.executed_first, (case.uploaded, case.executed_first, first)
    # The retry restored that step and went on from there, to the uninterrupted run's result.
    location = f"{case.uri.rstrip('/')}/{case.prefix}"
    assert f"Restored checkpoint from {location}: generation " in case.retry_out, retry
    assert f"step {case.uploaded}, written " in case.retry_out, retry
    assert case.result == kills["plain"] == {"value": kills["plain"]["value"], "steps": STEPS}, retry
    if not case.cli:
        assert f"RESULT {json.dumps(case.result)}" in case.retry_out, retry
    steps = case.steps()
    since_upload = case.executed_first - case.uploaded
    assert len(steps) <= STEPS + since_upload
    assert len(steps) == STEPS + since_upload, (len(steps), case.executed_first, case.uploaded)
    assert steps[case.executed_first] == case.uploaded + 1
    assert steps[-1] == STEPS
    assert case.containers_left == []
    report_figure(
        f"checkpoint kill {case.name}: killed at step {case.executed_first} after {case.uploads_first} "
        f"upload(s), restored step {case.uploaded}, {len(steps)} steps executed in total "
        f"(uninterrupted: {STEPS})"
    )


@pytest.mark.parametrize("name", NAMES)
def test_retention_after_the_retry_succeeds(name, kills):
    case: Case = kills["cases"][name]
    if case.retention == "delete_on_success":
        assert case.left_keys == [], case.left_keys
        assert "Deleted checkpoint " in case.retry_out
        assert "checkpoint_retention='delete_on_success'" in case.retry_out
        assert case.local_dir is not None
        assert not case.local_dir.exists(), case.local_dir
    else:
        manifest = _manifest(case, kills["s3"], kills["bucket"])
        assert manifest is not None
        assert manifest["meta"]["step"] == STEPS
        assert sorted(manifest["files"]) == ["mlops-checkpoint.json", "state.json"]
        # The store holds it: the worker's working copy is removed after the final upload.
        assert case.local_dir is not None
        assert not case.local_dir.exists(), case.local_dir


def test_secrets_stay_out_of_logs_and_the_container(kills):
    cases = kills["cases"]
    for case in cases.values():
        assert SECRET_KEY not in case.first_out + case.retry_out, case.name
    # The container is given the directory, never the store's credentials: the worker syncs.
    inspected = cases["docker-s3-sigterm"].inspect
    assert inspected is not None, "the running container was not inspected"
    assert f"MLOPS_CHECKPOINT_DIR={CONTAINER_CHECKPOINT_DIR}" in inspected["Config"]["Env"]
    (mount,) = [m for m in inspected["Mounts"] if m["Destination"] == CONTAINER_CHECKPOINT_DIR]
    assert (mount["Type"], mount["RW"]) == ("bind", True)
    assert mount["Source"].startswith(str(kills["local_root"]))
    text = json.dumps(inspected)
    assert SECRET_KEY not in text
    assert ACCESS_KEY not in text


def test_rendered_fields_hold_the_uri_and_no_secret(moto_s3, monkeypatch, tmp_path):
    """The rendered template fields (what the UI shows) after the checkpoint's connection was read."""
    from airflow_mlops_provider.checkpoints.task import task_session
    from airflow_mlops_provider.operators.docker import GpuDockerOperator
    from tests.integration.docker.conftest import make_context

    for name, value in moto_s3.aws_conn_uri_env(CONN_ID).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR", str(tmp_path))
    op = GpuDockerOperator(
        task_id="train",
        image="mlops-base:bookworm",
        command=["python3", "/work/trainer.py"],
        env={"STEPS": "60"},
        checkpoint="{{ params.ckpt }}",
        checkpoint_conn_id=CONN_ID,
    )
    context = {**make_context("kill_rendered", task_id="train"), "params": {"ckpt": "s3://kills/ckpt"}}
    op.render_template_fields(context)
    session = task_session(op, context)
    assert session is not None
    assert session.settings.client_kwargs()["aws_secret_access_key"] == SECRET_KEY  # it was read
    rendered = {name: getattr(op, name) for name in op.template_fields}
    assert rendered["checkpoint"] == "s3://kills/ckpt"
    text = repr(rendered) + repr(session.settings) + session.location
    assert SECRET_KEY not in text
    assert ACCESS_KEY not in text


def test_a_store_that_cannot_be_used_fails_before_the_container_and_keeps_the_checkpoint(
    moto_s3, base_image, tmp_path, monkeypatch
):
    """A permanent restore error: no retries, no container, and nothing uploaded over the checkpoint."""
    from airflow_mlops_provider.exceptions import CheckpointConfigError
    from airflow_mlops_provider.operators.docker import GpuDockerOperator
    from tests.integration.docker.conftest import make_context

    for name, value in moto_s3.aws_conn_uri_env(CONN_ID).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR", str(tmp_path / "local"))
    dag_id = f"kill_nobucket_{uuid.uuid4().hex[:6]}"
    op = GpuDockerOperator(
        task_id="train",
        image=base_image,
        command=["true"],
        mount_tmp_dir=False,
        checkpoint="s3://no-such-bucket-for-kills/ckpt",
        checkpoint_conn_id=CONN_ID,
    )
    with pytest.raises(CheckpointConfigError) as info:
        op.execute(make_context(dag_id, task_id="train"))
    message = str(info.value)
    assert "Could not restore the checkpoint at s3://no-such-bucket-for-kills/ckpt/" in message
    assert "no-such-bucket-for-kills" in message
    assert SECRET_KEY not in message
    assert _containers(dag_id) == []
