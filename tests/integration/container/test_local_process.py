"""LocalProcessOperator on Airflow's SubprocessHook keeps its contract, with real processes.

Live log lines, the last ``tail_lines`` lines in the error, the worker's working directory, ``env``
over the worker's environment (names logged), and the whole process group stopped when the task is
killed (SIGTERM through the hook's ``send_sigterm``, then SIGKILL after the grace period).
The cases shared with Docker and Kubernetes are in tests/integration/parity.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from airflow_mlops_provider.exceptions import ContainerFailedError
from airflow_mlops_provider.operators import local
from airflow_mlops_provider.operators.local import LocalProcessOperator

pytestmark = pytest.mark.integration

WRITE = "open(os.environ['MLOPS_RESULT_FILE'], 'w').write"


def _op(code: str, **kwargs) -> LocalProcessOperator:
    return LocalProcessOperator(task_id="t", command=[sys.executable, "-c", code], **kwargs)


@pytest.fixture
def op_log():
    log = mock.Mock()
    with mock.patch.object(LocalProcessOperator, "log", new_callable=mock.PropertyMock, return_value=log):
        yield log


def test_output_lines_are_logged_live_through_the_operators_log(op_log):
    assert _op("print('one'); print('two')").execute({}) is None
    assert mock.call("%s", "one") in op_log.info.call_args_list
    assert mock.call("%s", "two") in op_log.info.call_args_list


def test_the_error_carries_the_last_tail_lines(op_log):
    code = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(1)"
    with pytest.raises(ContainerFailedError) as excinfo:
        _op(code, tail_lines=3).execute({})
    assert excinfo.value.exit_code == 1
    assert excinfo.value.logs == "line 97\nline 98\nline 99"
    assert re.fullmatch(
        r"Local process \[.*\] exited with code 1\n--- last container output ---\nline 97\nline 98\nline 99",
        str(excinfo.value),
        flags=re.DOTALL,
    )


def test_the_process_runs_in_the_workers_directory_unless_cwd_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = f"import json, os; {WRITE}(json.dumps(os.getcwd()))"
    assert _op(code).execute({}) == str(tmp_path)  # not the hook's default, a temporary directory
    other = tmp_path / "other"
    other.mkdir()
    assert _op(code, cwd=str(other)).execute({}) == str(other)


def test_env_wins_over_the_workers_environment_and_the_names_are_logged(op_log, monkeypatch):
    monkeypatch.setenv("LOCAL_SHARED", "worker-secret")
    code = f"import json, os; {WRITE}(json.dumps([os.environ['LOCAL_SHARED'], os.environ['LOCAL_ONLY']]))"
    assert _op(code, env={"LOCAL_SHARED": "env", "LOCAL_ONLY": 1}).execute({}) == ["env", "1"]
    op_log.info.assert_any_call("env overrides %s given in %s", ["LOCAL_SHARED"], "the worker's environment")
    assert "worker-secret" not in str(op_log.info.call_args_list)


def _gone(pid: int, timeout: float = 5) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its new parent to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in {"Z", "X"}:
            return True
        time.sleep(0.05)
    return False


def _run_then_kill(op: LocalProcessOperator, pid_file: Path) -> tuple[BaseException | None, float, int]:
    """Run ``op`` in a thread, kill it once its child wrote its pid; return the error, the kill time, the pid."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute({})
        except BaseException as err:  # the thread's outcome, checked by the caller
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    started = time.monotonic()
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return (errors[0] if errors else None), time.monotonic() - started, child


def test_on_kill_stops_the_whole_process_group(tmp_path, op_log):
    pid_file = tmp_path / "child.pid"
    op = LocalProcessOperator(task_id="t", command=["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"])
    error, _, child = _run_then_kill(op, pid_file)
    assert isinstance(error, ContainerFailedError)
    assert error.exit_code == -15  # SIGTERM
    assert _gone(child)  # the grandchild got the group's SIGTERM too


def test_on_kill_sends_sigkill_when_the_group_ignores_sigterm(tmp_path, op_log, monkeypatch):
    monkeypatch.setattr(local, "KILL_GRACE_SECONDS", 1)
    pid_file = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait; wait"
    op = LocalProcessOperator(task_id="t", command=["sh", "-c", script])
    error, elapsed, child = _run_then_kill(op, pid_file)
    assert isinstance(error, ContainerFailedError)
    assert error.exit_code == -9  # SIGKILL, after the grace period
    assert elapsed >= 1
    assert _gone(child)
