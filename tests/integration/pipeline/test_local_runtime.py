"""The local-process runtime keeps the container contract: result file as XCom, errors with output."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops_provider.operators.local import LocalProcessOperator
from tests.conftest import dags_test

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "dags"


def test_local_runtime_returns_result_files_and_reports_failures(airflow_db, tmp_path):
    out = tmp_path / "collected.txt"
    proc = dags_test("local_runtime", DAGS, extra_env={"LOCAL_RUNTIME_OUT": str(out)}, check=False)
    log = proc.stdout + proc.stderr
    assert out.read_text() == "a,b", log[-4000:]
    assert "training on" in log
    assert "Local runtime cannot reserve GPUs: resources ask for 1 GPU(s)" in log
    assert "Local runtime ignores container-only arguments ['docker_kwargs']" in log
    # The failing task's error names the exit code and carries the last output lines.
    assert "exited with code 3" in log
    assert "boom" in log
    assert "state=failed" in log  # the run fails because one task failed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": []}, "command must be a non-empty string or list of strings, got []"),
        ({"command": [1.5, {"a": 1}]}, "command must be a string or a list of strings, got [1.5, {'a': 1}]"),
        ({"command": "true", "env": ["A=1"]}, "env must be a dict of variable names to values, got ['A=1']"),
        ({"command": "true", "resources": {"gpus": -1}}, "gpus must be an integer >= 0, got -1"),
    ],
    ids=["empty-command", "bad-command", "env-list", "bad-resources"],
)
def test_bad_arguments_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError) as excinfo:
        LocalProcessOperator(task_id="t", **kwargs)
    assert str(excinfo.value) == message
