"""The container contract on Docker, against the real engine: env precedence and the result file.

The same cases run on every runtime in the parity test; these pin what is Docker's own: ``env``
merged over DockerOperator's ``environment`` (the overridden names logged), ``MLOPS_RESULT_FILE``
in the container, and the result file read with ``get_archive``.
"""

from __future__ import annotations

import re

import pytest

from airflow_mlops_provider.exceptions import ContainerFailedError, ResultFileError
from airflow_mlops_provider.operators._common import parse_result_text
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import make_context, py, task_containers, unique_dag_id

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ENV_CODE = (
    "import json, os; json.dump({k: os.environ.get(k) for k in ('A', 'B', 'MLOPS_RESULT_FILE')}, "
    "open(os.environ['MLOPS_RESULT_FILE'], 'w'))"
)


def _run(image: str, command, **kwargs):
    dag_id = unique_dag_id("contract")
    op = GpuDockerOperator(task_id="t", image=image, command=command, mount_tmp_dir=False, **kwargs)
    return op, dag_id


def test_env_wins_over_environment_and_the_overridden_names_are_logged(base_image, cli, lease_dir, capfd):
    op, dag_id = _run(base_image, py(ENV_CODE), env={"A": "ours"}, environment={"A": "native", "B": "kept"})
    result = op.execute(make_context(dag_id))
    assert result == {"A": "ours", "B": "kept", "MLOPS_RESULT_FILE": "/airflow/xcom/return.json"}
    assert re.search(r"\[info\s*\] env overrides \['A'\] given in environment ", capfd.readouterr().out)
    assert task_containers(cli, dag_id) == []


def test_a_templated_env_is_merged_after_rendering(base_image, cli, lease_dir):
    op, dag_id = _run(base_image, py(ENV_CODE), env="{{ params.env }}", environment={"B": "kept"})
    op.env = {"A": "rendered", "B": "env"}  # what rendering produced
    result = op.execute(make_context(dag_id))
    assert result == {"A": "rendered", "B": "env", "MLOPS_RESULT_FILE": "/airflow/xcom/return.json"}


def test_command_as_a_string_runs(base_image, cli, lease_dir):
    op, dag_id = _run(base_image, "sh -c 'echo last line'", log_xcom=True)
    assert op.execute(make_context(dag_id)) == "last line"  # no result file: the log line


def test_a_missing_result_file_returns_none(base_image, cli, lease_dir):
    op, dag_id = _run(base_image, ["true"])
    assert op.execute(make_context(dag_id)) is None


def test_a_malformed_result_file_is_a_result_file_error(base_image, cli, lease_dir):
    code = py("open('/airflow/xcom/return.json', 'w').write('{not json')")
    op, dag_id = _run(base_image, code)
    with pytest.raises(ResultFileError) as err:
        op.execute(make_context(dag_id))
    with pytest.raises(ResultFileError) as contract:  # the message every runtime gives
        parse_result_text("{not json", source=f"Container {op.container_name}")
    assert str(err.value) == str(contract.value)
    assert isinstance(err.value, ContainerFailedError)  # retried like a failed container
    assert task_containers(cli, dag_id) == []
