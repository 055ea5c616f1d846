"""GpuKubernetesPodOperator keeps the container contract through KPO's public methods.

Env precedence and the rendered-value checks go through KubernetesPodOperator's real pod builder;
the result file and the exit code through KPO's real ``extract_xcom`` and ``cleanup``, with only
the cluster calls (KPO's pod manager and API client) replaced. The same rules on every runtime
are checked by tests/integration/parity.
"""

from __future__ import annotations

import json
import re
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_mlops_provider.exceptions import ContainerConfigError, ContainerFailedError, ResultFileError
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator, base_exit_code

IMAGE_MSG = "image must be a non-empty image reference such as 'python:3.11', got "


def _op(**kwargs):
    kwargs.setdefault("image", "python:3.11")
    return GpuKubernetesPodOperator(task_id="t", namespace="ml", **kwargs)


def _env(pod):
    return [(e.name, e.value, e.value_from) for e in pod.spec.containers[0].env]


def test_env_wins_over_env_vars_and_other_entries_stay():
    from kubernetes.client import models as k8s

    secret = k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(name="s", key="token"))
    op = _op(
        env={"A": "from-env", "SHARED": "env", "TOKEN": "plain"},
        env_vars=[
            k8s.V1EnvVar(name="SHARED", value="env_vars"),
            k8s.V1EnvVar(name="TOKEN", value_from=secret),
            k8s.V1EnvVar(name="KEY", value_from=secret),
            k8s.V1EnvVar(name="B", value="from-env-vars"),
        ],
    )
    log = mock.Mock()
    with mock.patch.object(GpuKubernetesPodOperator, "log", new_callable=mock.PropertyMock, return_value=log):
        pod = op.build_pod_request_obj(dry_run=True)
    assert _env(pod) == [
        ("A", "from-env", None),
        ("SHARED", "env", None),
        ("TOKEN", "plain", None),
        ("KEY", None, secret),
        ("B", "from-env-vars", None),
        ("MLOPS_RESULT_FILE", "/airflow/xcom/return.json", None),
    ]
    # Names only, never values.
    log.info.assert_any_call("env overrides %s given in %s", ["SHARED", "TOKEN"], "env_vars")
    assert "plain" not in str(log.info.call_args_list)


def test_env_vars_as_a_dict_and_the_result_file_variable_is_the_runtimes():
    op = _op(env={"MLOPS_RESULT_FILE": "/elsewhere"}, env_vars={"B": "b", "MLOPS_RESULT_FILE": "/x"})
    pod = op.build_pod_request_obj(dry_run=True)
    assert _env(pod) == [("B", "b", None), ("MLOPS_RESULT_FILE", "/airflow/xcom/return.json", None)]


def test_without_the_result_file_there_is_no_sidecar_and_no_variable():
    pod = _op(return_result_file=False, env={"A": "1"}).build_pod_request_obj(dry_run=True)
    assert [c.name for c in pod.spec.containers] == ["base"]
    assert _env(pod) == [("A", "1", None)]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"return_result_file": False}, False),
        ({"do_xcom_push": False}, False),
        ({"return_result_file": True, "do_xcom_push": True}, True),
    ],
    ids=["default", "return-result-file", "kpo-do-xcom-push", "both-agree"],
)
def test_return_result_file_drives_do_xcom_push(kwargs, expected):
    op = _op(**kwargs)
    assert op.return_result_file is expected
    assert op.do_xcom_push is expected


def test_return_result_file_and_do_xcom_push_must_agree():
    message = (
        "return_result_file and do_xcom_push both set the same thing; pass only one, "
        "got return_result_file=False and do_xcom_push=True"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _op(return_result_file=False, do_xcom_push=True)


def test_return_result_file_false_in_partial_maps():
    import pendulum
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("partial_result_file", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        GpuKubernetesPodOperator.partial(task_id="m", image="x", return_result_file=False).expand(
            command=[["a"], ["b"]]
        )
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert restored.task_dict["m"].partial_kwargs["return_result_file"] is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image", "", f"Invalid image after rendering: {IMAGE_MSG}''"),
        ("image", "   ", f"Invalid image after rendering: {IMAGE_MSG}'   '"),
        (
            "command",
            {"run": "x"},
            "Invalid command after rendering: command must be a string or a list of strings, got {'run': 'x'}",
        ),
        (
            "env",
            ["A=1"],
            "Invalid env after rendering: env must be a dict of variable names to values, got ['A=1']",
        ),
        (
            "env",
            {"A=B": "1"},
            "Invalid env after rendering: env keys must be non-empty strings without '=', got ['A=B'] in env",
        ),
        (
            "compute_resources",
            '{"gpus": "two"}',
            "Invalid resources after rendering: gpus must be an integer >= 0, got 'two'",
        ),
    ],
    ids=["empty-image", "blank-image", "command-dict", "env-list", "env-key-with-equals", "resources"],
)
def test_bad_rendered_values_fail_without_retry(field, value, message):
    op = _op(image="{{ params.image }}", command="{{ params.c }}", env="{{ params.e }}")
    op.command, op.env = None, None
    setattr(op, field, value)  # what rendering produced
    with pytest.raises(ContainerConfigError, match=f"^{re.escape(message)}$") as excinfo:
        op.build_pod_request_obj(dry_run=True)
    assert isinstance(excinfo.value, AirflowFailException)  # not retried


# -- the result file: KPO's extract_xcom with the sidecar's answers ---------------------------


def _sidecar(text: str | None):
    """KPO's ``PodManager.extract_xcom``: EMPTY when no file, else the text, json-checked first."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import EMPTY_XCOM_RESULT

    def extract_xcom(pod, **kwargs):
        if text is None:
            return EMPTY_XCOM_RESULT
        json.loads(text)  # as PodManager.extract_xcom_json does, before returning the text
        return text

    return mock.Mock(extract_xcom=mock.Mock(side_effect=extract_xcom))


def _pod(name="train-abc", exit_code=None):
    from kubernetes.client import models as k8s

    statuses = None
    if exit_code is not None:
        terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code)
        statuses = [
            k8s.V1ContainerStatus(
                name="base",
                image="x",
                image_id="",
                ready=False,
                restart_count=0,
                state=k8s.V1ContainerState(terminated=terminated),
            )
        ]
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace="ml"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
        status=k8s.V1PodStatus(phase="Failed" if exit_code else "Succeeded", container_statuses=statuses),
    )


def test_result_file_present_missing_and_malformed():
    op = _op()
    with mock.patch.object(GpuKubernetesPodOperator, "pod_manager", _sidecar('{"loss": 0.5}')):
        assert op.extract_xcom(_pod()) == {"loss": 0.5}
    with mock.patch.object(GpuKubernetesPodOperator, "pod_manager", _sidecar(None)):
        assert op.extract_xcom(_pod()) is None
    message = (
        "Pod train-abc wrote a result file ($MLOPS_RESULT_FILE) that is not JSON: Expecting property "
        "name enclosed in double quotes: line 1 column 2 (char 1); first bytes: '{not json'"
    )
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", _sidecar("{not json")),
        pytest.raises(ResultFileError, match=f"^{re.escape(message)}$"),
    ):
        op.extract_xcom(_pod())


def _sidecar_exec_answering(text: str):
    """What ``kubernetes.stream.stream`` returns for the sidecar's exec: ``text`` on stdout."""

    def stream(*args, **kwargs):
        ws = mock.MagicMock()
        ws.is_open.return_value = False  # the kill command finds the sidecar gone
        ws.peek_stderr.return_value = False
        ws.read_all.return_value = text
        return ws

    return stream


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ('{"loss": 0.5}\n', {"loss": 0.5}),
        ("__airflow_xcom_result_empty__\n", None),  # what the sidecar prints when there is no file
        ("{not json", ResultFileError),
    ],
    ids=["present", "missing", "malformed"],
)
def test_result_file_through_kpos_real_pod_manager(text, outcome):
    # Only the exec stream and the API client are fakes: PodManager.extract_xcom, its JSON check
    # and KPO's extract_xcom are the installed provider's, so a change in what escapes them fails here.
    from kubernetes.client import models as k8s

    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    remote = _pod()
    remote.status.container_statuses = [
        k8s.V1ContainerStatus(
            name="airflow-xcom-sidecar", image="x", image_id="", ready=True, restart_count=0, state=running
        )
    ]
    client = mock.Mock()
    client.read_namespaced_pod.return_value = remote
    op = _op()
    with (
        mock.patch.object(GpuKubernetesPodOperator, "client", client),
        mock.patch(
            "airflow.providers.cncf.kubernetes.utils.pod_manager.kubernetes_stream",
            _sidecar_exec_answering(text),
        ),
    ):
        if outcome is ResultFileError:
            with pytest.raises(
                ResultFileError, match=r"^Pod train-abc wrote a result file \(\$MLOPS_RESULT_FILE\)"
            ):
                op.extract_xcom(_pod())
        else:
            assert op.extract_xcom(_pod()) == outcome


def _cleanup(op, remote_pod, logs=(b"line one\n", b"boom\n")):
    manager = mock.Mock()
    manager.read_pod.return_value = remote_pod
    manager.read_pod_logs.return_value = iter(logs)
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", manager),
        mock.patch.object(GpuKubernetesPodOperator, "client", mock.Mock()),
    ):
        op.cleanup(remote_pod, remote_pod)
    return manager


def test_non_zero_exit_is_container_failed_error_with_exit_code_and_last_lines():
    op = _op()
    remote = _pod(exit_code=3)
    message = "Pod train-abc exited with code 3\n--- last container output ---\nline one\nboom"
    with pytest.raises(ContainerFailedError, match=f"^{re.escape(message)}$") as excinfo:
        _cleanup(op, remote)
    assert excinfo.value.exit_code == 3
    assert "returned a failure" in str(excinfo.value.__cause__)  # KPO's own error, chained
    assert not isinstance(excinfo.value, AirflowFailException)  # retried like any failure


def test_cleanup_reads_the_tail_before_kpo_deletes_the_pod():
    op = _op()
    manager = mock.Mock()
    remote = _pod(exit_code=1)
    manager.read_pod.return_value = remote
    manager.read_pod_logs.side_effect = lambda *a, **k: iter([b"last\n"])
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", manager),
        mock.patch.object(GpuKubernetesPodOperator, "client", mock.Mock()),
        pytest.raises(ContainerFailedError, match="exited with code 1\n--- last container output ---\nlast$"),
    ):
        op.cleanup(remote, remote)
    calls = [c[0] for c in manager.method_calls if c[0] in {"read_pod_logs", "delete_pod"}]
    assert calls == ["read_pod_logs", "delete_pod"]
    assert manager.read_pod_logs.call_args.kwargs == {"tail_lines": 20, "follow": False}


def test_unreadable_log_still_gives_the_exit_code():
    op = _op()
    remote = _pod(exit_code=2)
    manager = mock.Mock(read_pod=mock.Mock(return_value=remote))
    manager.read_pod_logs.side_effect = RuntimeError("connection refused")
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", manager),
        mock.patch.object(GpuKubernetesPodOperator, "client", mock.Mock()),
        pytest.raises(ContainerFailedError, match=r"^Pod train-abc exited with code 2$"),
    ):
        op.cleanup(remote, remote)


def test_success_skip_and_failures_without_exit_code_stay_kpos():
    _cleanup(_op(), _pod(exit_code=0))  # no error
    with pytest.raises(AirflowSkipException, match="returned exit code 3. Skipping"):
        _cleanup(_op(skip_on_exit_code=3), _pod(exit_code=3))
    pending = _pod()
    pending.status.phase = "Failed"  # e.g. never scheduled: no exit code to report
    with pytest.raises(AirflowException, match="^Pod train-abc returned a failure") as excinfo:
        _cleanup(_op(), pending)
    assert not isinstance(excinfo.value, ContainerFailedError)


def test_a_malformed_result_file_stays_the_error_when_kpo_cleans_up_a_stale_pod():
    # Sync mode: KPO cleans up with the pod as it was before the sidecar was read (still
    # running), which it reports as a failure; the result file's error is the task's error.
    op = _op()
    running = _pod()
    running.status.phase = "Running"
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", _sidecar("[1,")),
        pytest.raises(ResultFileError),
    ):
        op.extract_xcom(running)
    with pytest.raises(ResultFileError, match="^Pod train-abc wrote a result file") as excinfo:
        _cleanup(op, running)
    assert isinstance(excinfo.value.__cause__, json.JSONDecodeError)
    # Consumed: the next cleanup is KPO's again.
    with pytest.raises(AirflowException, match="returned a failure"):
        _cleanup(op, running)


def test_a_non_zero_exit_wins_over_a_malformed_result_file_as_on_the_other_runtimes():
    op = _op()
    with (
        mock.patch.object(GpuKubernetesPodOperator, "pod_manager", _sidecar("[1,")),
        pytest.raises(ResultFileError),
    ):
        op.extract_xcom(_pod())
    with pytest.raises(ContainerFailedError, match="^Pod train-abc exited with code 4\n") as excinfo:
        _cleanup(op, _pod(exit_code=4))
    assert not isinstance(excinfo.value, ResultFileError)


def test_base_exit_code():
    assert base_exit_code(_pod(exit_code=137), "base") == 137
    assert base_exit_code(_pod(exit_code=137), "other") is None
    assert base_exit_code(_pod(), "base") is None
    assert base_exit_code(None, "base") is None
