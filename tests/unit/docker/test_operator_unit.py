"""GpuDockerOperator without an engine: arguments, templating, and the engine's refusal (mocked client).

Each behaviour here also has a real-engine test under tests/integration/docker/.
"""

from __future__ import annotations

import io
import tarfile
from unittest import mock

import pytest

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.exceptions import GpuRuntimeMissingError
from airflow_mlops_provider.operators._docker_host import parse_host_gpus
from airflow_mlops_provider.operators.docker import GpuDockerOperator, _result_dir_tar, _stream_lines
from tests.unit.docker.conftest import context


def test_init_reads_no_docker_and_keeps_docker_operator_arguments():
    op = GpuDockerOperator(
        task_id="t",
        image="python:3.11",
        command="echo hi",
        env={"A": 1},
        environment={"B": "2"},
        resources={"gpus": 1, "memory": "1Gi"},
        network_mode="none",
        auto_remove="never",
        xcom_all=True,
    )
    assert "hook" not in op.__dict__
    assert op.environment == {"B": "2", "A": 1}
    assert op.compute_resources == Resources(gpus=1, memory=1024**3)
    assert op.network_mode == "none"
    assert op.reattach_on_restart is True
    assert op.keep_container is False
    assert op.return_result_file is True


def test_templated_fields():
    for field in ("image", "command", "environment", "compute_resources", "gpu_ids", "container_name"):
        assert field in GpuDockerOperator.template_fields


@pytest.mark.parametrize(
    ("value", "ids"),
    [(2, ["0", "1"]), ("3", ["0", "1", "2"]), ("0,1,3", ["0", "1", "3"]), (["a", "b"], ["a", "b"]), (0, [])],
    ids=["int", "digit-string", "id-list-string", "id-list", "zero"],
)
def test_host_gpus_inventory(value, ids):
    assert parse_host_gpus(value) == ids


def _refusing_client():
    from docker.errors import APIError

    client = mock.MagicMock()
    client.info.return_value = {"Runtimes": {"runc": {}}}
    client.inspect_container.side_effect = __import__("docker").errors.NotFound("no such container")
    client.create_container.return_value = {"Id": "abc123def456"}
    client.containers.return_value = []
    client.images.return_value = [{"Id": "img"}]
    response = mock.Mock(status_code=500)
    client.start.side_effect = [
        APIError(
            "500",
            response=response,
            explanation='could not select device driver "nvidia" with capabilities: [[gpu]]',
        ),
        None,
    ]
    client.attach.return_value = iter([b"on cpu\n"])
    client.wait.return_value = {"StatusCode": 0}
    client.get_archive.side_effect = __import__("docker").errors.NotFound("no file")
    return client


def _op(**kwargs):
    return GpuDockerOperator(
        task_id="t",
        image="python:3.11",
        command=["true"],
        resources={"gpus": 1},
        host_gpus=2,
        mount_tmp_dir=False,
        **kwargs,
    )


def test_engine_refusing_the_device_request_fails_without_retry(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__GPU_LEASE_DIR", str(tmp_path))
    client = _refusing_client()
    op = _op()
    with mock.patch.object(GpuDockerOperator, "cli", new_callable=mock.PropertyMock, return_value=client):
        with pytest.raises(GpuRuntimeMissingError) as err:
            op.execute(context())
    assert str(err.value).startswith(
        "Docker host 'unix://var/run/docker.sock' cannot serve gpus=1: the engine has no NVIDIA device driver"
    )
    from airflow.sdk.exceptions import AirflowFailException

    assert isinstance(err.value, AirflowFailException)
    client.remove_container.assert_called_with("abc123def456", force=True, v=True)


def test_engine_refusal_with_cpu_fallback_recreates_without_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__GPU_LEASE_DIR", str(tmp_path))
    client = _refusing_client()
    op = _op(gpu_fallback="cpu")
    with mock.patch.object(GpuDockerOperator, "cli", new_callable=mock.PropertyMock, return_value=client):
        assert op.execute(context()) is None
    assert client.create_host_config.call_args_list[0].kwargs["device_requests"]
    assert client.create_host_config.call_args_list[1].kwargs["device_requests"] is None


def test_result_dir_tar_holds_a_writable_airflow_xcom():
    with tarfile.open(fileobj=io.BytesIO(_result_dir_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["airflow", "airflow/xcom"]
    assert all(m.isdir() and m.mode == 0o777 for m in members.values())


def test_stream_lines_joins_chunks_and_keeps_the_tail():
    log = mock.Mock()
    lines = _stream_lines(iter([b"a\nb", b"c\n", b"d"]), log, keep_all=False)
    assert list(lines) == ["a", "bc", "d"]
    assert [c.args[1] for c in log.info.call_args_list] == ["a", "bc", "d"]


def test_stream_lines_logs_a_burst_as_one_record_and_keeps_all_lines_when_asked():
    log = mock.Mock()
    burst = "".join(f"l{i}\n" for i in range(100)).encode()
    lines = _stream_lines(iter([b"one\n", burst]), log, keep_all=True)
    assert len(lines) == 101
    assert log.info.call_count == 2
    assert log.info.call_args_list[1].args[1].splitlines() == [f"l{i}" for i in range(100)]


@pytest.mark.parametrize(
    ("kwargs", "policy"),
    [
        ({}, "force"),
        ({"keep_container": True}, "never"),
        ({"auto_remove": "success"}, "success"),
        ({"auto_remove": "never"}, "never"),
        ({"keep_container": True, "auto_remove": "never"}, "never"),
    ],
    ids=["default", "keep-container", "success", "never", "keep-and-never"],
)
def test_auto_remove_policy_is_explicit(kwargs, policy):
    assert GpuDockerOperator(task_id="t", image="python:3.11", **kwargs).auto_remove == policy


def test_env_is_templated_and_host_gpus_keeps_names():
    assert "env" in GpuDockerOperator.template_fields
    op = GpuDockerOperator(task_id="t", image="python:3.11", host_gpus={"0": "NVIDIA L4"})
    assert (op.host_gpus.ids, op.host_gpus.names) == (["0"], {"0": "NVIDIA L4"})


def test_the_docker_provider_gate_is_checked_before_container_creation(tmp_path, monkeypatch):
    from airflow_mlops_provider._compat import UnsupportedVersionError, VersionRange
    from airflow_mlops_provider._compat import docker as compat

    monkeypatch.setattr(
        compat, "GATE", VersionRange(compat.GATE.distribution, "0.1", "0.2", compat.GATE.what)
    )
    client = _refusing_client()
    op = GpuDockerOperator(task_id="t", image="python:3.11", command=["true"], mount_tmp_dir=False)
    with mock.patch.object(GpuDockerOperator, "cli", new_callable=mock.PropertyMock, return_value=client):
        with pytest.raises(UnsupportedVersionError):
            op.execute(context())
    client.create_container.assert_not_called()


def test_env_without_environment_logs_no_override():
    """Regression: ``env`` alone was logged as overriding itself in ``environment`` (once per trial in sweeps)."""
    from unittest import mock

    from airflow_mlops_provider.operators.docker_args import container_environment, environment_at_init

    merged, names = environment_at_init({"A": "1"}, None)
    assert names == frozenset()
    log = mock.Mock()
    assert container_environment({"A": "1"}, merged, names, result_file=False, log=log) == {"A": "1"}
    log.info.assert_not_called()
    # a real override is still logged
    merged, names = environment_at_init({"A": "1"}, {"A": "0", "B": "2"})
    container_environment({"A": "1"}, merged, names, result_file=False, log=log)
    log.info.assert_any_call("env overrides %s given in %s", ["A"], "environment")
