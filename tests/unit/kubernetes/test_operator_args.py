"""GpuKubernetesPodOperator arguments: defaults, bad input, kill behaviour."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator

MEMORY_MSG = "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes"
TOLERATION_SHAPE = (
    "gpu_tolerations must be a list of toleration dicts, e.g. "
    "[{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}], "
)


def _op(**kwargs):
    kwargs.setdefault("image", "python:3.11")
    return GpuKubernetesPodOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resources": {"gpus": -1}}, "gpus must be an integer >= 0, got -1"),
        ({"resources": {"gpus": 1.5}}, "gpus must be an integer >= 0, got 1.5"),
        (
            {"resources": {"gpus": 0, "gpu_type": "NVIDIA-A100"}},
            "gpu_type is only valid with gpus >= 1, got gpu_type='NVIDIA-A100' with gpus=0",
        ),
        ({"resources": {"memory": "lots"}}, f"{MEMORY_MSG}, got 'lots'"),
        ({"resources": {"cpus": 0}}, "cpus must be a number > 0, got 0"),
        (
            {"resources": {"gpus": 1, "gpu_vendor": "intel"}},
            "gpu_vendor must be one of ['amd', 'nvidia'], got 'intel'",
        ),
        (
            {"resources": {"gpu": 1}},
            "resources has unknown field(s) ['gpu']; expected some of "
            "['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size']",
        ),
        (
            {"gpu_tolerations": {"key": "nvidia.com/gpu", "operator": "Exists"}},
            TOLERATION_SHAPE + "got {'key': 'nvidia.com/gpu', 'operator': 'Exists'}",
        ),
        ({"gpu_tolerations": "nvidia.com/gpu"}, TOLERATION_SHAPE + "got 'nvidia.com/gpu'"),
        (
            {"gpu_tolerations": ["nvidia.com/gpu"]},
            "gpu_tolerations must be a list of dicts like "
            "{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}, got item 'nvidia.com/gpu'",
        ),
        (
            {"gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Maybe"}]},
            "gpu_tolerations item {'key': 'nvidia.com/gpu', 'operator': 'Maybe'}: "
            "operator must be 'Exists' or 'Equal', got 'Maybe'",
        ),
        (
            {"gpu_tolerations": [{"key": "nvidia.com/gpu", "effct": "NoSchedule"}]},
            "gpu_tolerations item {'key': 'nvidia.com/gpu', 'effct': 'NoSchedule'} has unknown key(s) "
            "['effct']; expected some of ['effect', 'key', 'operator', 'toleration_seconds', 'value']",
        ),
        ({"gpu_type_label": ""}, "gpu_type_label must be a node label key, got ''"),
        ({"image": ""}, "image must be a non-empty image reference such as 'python:3.11', got ''"),
        ({"command": {"run": "x"}}, "command must be a string or a list of strings, got {'run': 'x'}"),
        ({"env": ["A=1"]}, "env must be a dict of variable names to values, got ['A=1']"),
        (
            {"resources": {"gpus": 1}, "container_resources": {"limits": {"cpu": "1"}}},
            "resources and container_resources both set the same thing; pass only one, "
            "got resources={'gpus': 1} and container_resources={'limits': {'cpu': '1'}}",
        ),
        (
            {"command": ["python3"], "arguments": ["-V"]},
            "command and arguments both set the same thing; pass only one, "
            "got command=['python3'] and arguments=['-V']",
        ),
    ],
    ids=[
        "negative-gpus",
        "fractional-gpus",
        "gpu-type-without-gpus",
        "bad-memory",
        "zero-cpus",
        "unknown-vendor",
        "unknown-resources-field",
        "toleration-dict-not-list",
        "toleration-string",
        "toleration-item-string",
        "toleration-bad-operator",
        "toleration-unknown-key",
        "empty-gpu-label",
        "empty-image",
        "command-dict",
        "env-list",
        "resources-and-container-resources",
        "command-and-arguments",
    ],
)
def test_bad_input_is_rejected_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _op(**kwargs)


@pytest.mark.parametrize(
    ("rendered", "message"),
    [
        ('{"gpus": "two"}', "Invalid resources after rendering: gpus must be an integer >= 0, got 'two'"),
        ("not json", "Invalid resources after rendering: resources must be a JSON object, got 'not json'"),
        (
            {"memory": "-1Gi"},
            f"Invalid resources after rendering: {MEMORY_MSG}, got '-1Gi'",
        ),
    ],
    ids=["gpus-string", "not-json", "negative-memory"],
)
def test_bad_rendered_resources_fail_without_retry(rendered, message):
    op = _op(resources="{{ params.resources }}")
    op.compute_resources = rendered  # what rendering produced
    with pytest.raises(AirflowFailException, match=f"^{re.escape(message)}$"):
        op.build_pod_request_obj(dry_run=True)


def test_unrendered_resources_are_not_validated_at_parse_time():
    op = _op(resources="{{ params.resources | tojson }}")
    assert op.compute_resources == "{{ params.resources | tojson }}"
    assert "compute_resources" in op.template_fields
    assert {"command", "env", "image"} <= set(op.template_fields)


def test_defaults_xcom_push_delete_pod_and_deferrable_from_config(monkeypatch):
    op = _op()
    assert op.do_xcom_push is True
    assert op.on_finish_action.value == "delete_pod"
    assert op.on_kill_action.value == "delete_pod"
    assert op.deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert _op().deferrable is True  # read when the operator is created, not when imported
    assert _op(deferrable=False).deferrable is False


def test_static_resources_are_validated_and_normalised_at_parse_time():
    from airflow_mlops_provider.compute import Resources

    op = _op(resources={"memory": "4g", "gpus": 1})
    assert op.compute_resources == Resources(memory=4 * 1024**3, gpus=1)
    assert op.resources is None  # BaseOperator's own `resources` is left alone


def test_building_twice_gives_the_same_pod_and_leaves_kpo_fields_untouched():
    op = _op(
        command="python3 -V",
        env={"A": 1},
        resources={"gpus": 1, "gpu_type": "NVIDIA-L4", "shm_size": "1Gi"},
        namespace="ns",
        random_name_suffix=False,
        name="trial",
    )
    first = op.build_pod_request_obj(dry_run=True)
    second = op.build_pod_request_obj(dry_run=True)
    assert first.to_dict() == second.to_dict()
    assert op.volumes == []
    assert op.tolerations == []
    assert op.arguments == []
    assert op.affinity == {}


def test_on_kill_deletes_the_pod():
    from kubernetes.client import models as k8s

    op = _op(termination_grace_period=5)
    op.pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="trial-abc", namespace="ml"))
    client = mock.Mock()
    with mock.patch.object(GpuKubernetesPodOperator, "client", client):
        op.on_kill()
    client.delete_namespaced_pod.assert_called_once_with(
        name="trial-abc", namespace="ml", grace_period_seconds=5
    )
