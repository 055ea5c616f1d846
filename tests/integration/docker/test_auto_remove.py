"""``auto_remove`` against the real engine: what ``docker ps -a`` shows after success, failure and timeout.

- ``"force"`` (the default): nothing is left, whatever the outcome;
- ``"success"``: nothing after success; after a failure or a timeout the container is kept;
- ``"never"`` (and ``keep_container=True``): always kept.

A kept container is stopped and renamed ``<name>-try<N>``, so the next try of the same task
instance starts a fresh container instead of reattaching to the kept one.
"""

from __future__ import annotations

import datetime

import pytest
from airflow.sdk.exceptions import AirflowTaskTimeout

from airflow_mlops_provider.exceptions import ContainerFailedError
from airflow_mlops_provider.operators._common import deterministic_name, task_identity
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import make_context, py, remove_all, task_containers, unique_dag_id

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SUCCESS = py("import json; json.dump({'ok': True}, open('/airflow/xcom/return.json', 'w'))")
FAILURE = ["sh", "-c", "echo boom; exit 3"]
LONG = py("import time; time.sleep(60)")


def _run(image: str, command, dag_id: str, *, try_number: int = 1, **kwargs):
    op = GpuDockerOperator(
        task_id="t", image=image, command=command, mount_tmp_dir=False, stop_grace_period=0, **kwargs
    )
    context = make_context(dag_id, try_number=try_number)
    return op, context, deterministic_name(task_identity(context))


def _left(cli, dag_id: str) -> list[tuple[str, str]]:
    """(name, state) of every container of the DAG, any state: ``docker ps -a --filter label=...``."""
    return sorted((c["Names"][0].lstrip("/"), c["State"]) for c in task_containers(cli, dag_id))


CASES = [
    # (auto_remove, keep_container, left after success, left after failure)
    ("force", False, False, False),
    (None, False, False, False),
    ("success", False, False, True),
    ("never", False, True, True),
    (None, True, True, True),
]


@pytest.mark.parametrize(
    ("auto_remove", "keep_container", "kept_after_success", "kept_after_failure"),
    CASES,
    ids=["force", "default-is-force", "success", "never", "keep-container"],
)
def test_what_docker_ps_shows_after_success_and_failure(
    base_image, cli, lease_dir, auto_remove, keep_container, kept_after_success, kept_after_failure
):
    kwargs = {"keep_container": keep_container}
    if auto_remove is not None:
        kwargs["auto_remove"] = auto_remove
    dag_id = unique_dag_id("autorm")
    try:
        op, context, name = _run(base_image, SUCCESS, dag_id, **kwargs)
        assert op.auto_remove == (auto_remove or ("never" if keep_container else "force"))
        assert op.execute(context) == {"ok": True}
        assert _left(cli, dag_id) == ([(f"{name}-try1", "exited")] if kept_after_success else [])
        remove_all(cli, dag_id)

        op, context, name = _run(base_image, FAILURE, dag_id, **kwargs)
        with pytest.raises(ContainerFailedError, match="exited with code 3"):
            op.execute(context)
        assert _left(cli, dag_id) == ([(f"{name}-try1", "exited")] if kept_after_failure else [])
    finally:
        remove_all(cli, dag_id)


@pytest.mark.parametrize(
    ("auto_remove", "kept"),
    [("force", False), ("success", True), ("never", True)],
    ids=["force", "success", "never"],
)
def test_a_timed_out_container_is_stopped_and_removed_or_kept(base_image, cli, lease_dir, auto_remove, kept):
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    dag_id = unique_dag_id("autorm_timeout")
    try:
        op, context, name = _run(
            base_image, LONG, dag_id, auto_remove=auto_remove, execution_timeout=datetime.timedelta(seconds=2)
        )
        with pytest.raises(AirflowTaskTimeout):
            _run_execute_callable(context, op.execute, op)
        op.on_kill()  # what the task runner calls after the timeout
        assert _left(cli, dag_id) == ([(f"{name}-try1", "exited")] if kept else [])
    finally:
        remove_all(cli, dag_id)


def test_the_next_try_starts_afresh_next_to_the_kept_container(base_image, cli, lease_dir):
    dag_id = unique_dag_id("autorm_retry")
    try:
        for try_number in (1, 2):
            op, context, name = _run(base_image, FAILURE, dag_id, try_number=try_number, auto_remove="never")
            with pytest.raises(ContainerFailedError):
                op.execute(context)
        # Two runs, two kept containers: the second try did not reattach to the first one's.
        assert _left(cli, dag_id) == [(f"{name}-try1", "exited"), (f"{name}-try2", "exited")]
    finally:
        remove_all(cli, dag_id)
