"""Bad input to GpuDockerOperator: each case fails at DAG parse time with an exact message."""

from __future__ import annotations

import re

import pytest

from airflow_mlops_provider.operators.docker import GpuDockerOperator

MEM = "must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes"
HOST = "host_gpus must be a GPU count >= 0 or a list of device ids such as ['0', '1']"

CASES = [
    ("negative-gpus", {"resources": {"gpus": -1}}, "gpus must be an integer >= 0, got -1"),
    ("bool-gpus", {"resources": {"gpus": True}}, "gpus must be an integer >= 0, got True"),
    (
        "duplicate-gpu-ids",
        {"gpu_ids": ["0", "0"]},
        "gpu_ids must not repeat a device, got ['0', '0'] (repeated: ['0'])",
    ),
    (
        "gpu-ids-disagree-with-gpus",
        {"gpu_ids": ["0", "1"], "resources": {"gpus": 1}},
        "gpu_ids lists 2 device(s) ['0', '1'] but resources.gpus is 1; they must agree "
        "(or leave gpus at 0 to take the count from gpu_ids)",
    ),
    (
        "gpu-ids-as-string",
        {"gpu_ids": "0,1"},
        "gpu_ids must be a list of device ids such as ['0', '1'], got '0,1'",
    ),
    ("empty-gpu-ids", {"gpu_ids": []}, "gpu_ids must be a non-empty list of non-empty device ids, got []"),
    (
        "unknown-vendor",
        {"resources": {"gpus": 1, "gpu_vendor": "intel"}},
        "gpu_vendor must be one of ['amd', 'nvidia'], got 'intel'",
    ),
    ("malformed-memory", {"resources": {"memory": "12XB"}}, f"memory {MEM}, got '12XB'"),
    ("negative-shm", {"resources": {"shm_size": "-1g"}}, f"shm_size {MEM}, got '-1g'"),
    ("zero-cpus", {"resources": {"cpus": 0}}, "cpus must be a number > 0, got 0"),
    (
        "unknown-resources-field",
        {"resources": {"gpu": 1}},
        "resources has unknown field(s) ['gpu']; expected some of "
        "['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size']",
    ),
    ("resources-not-json", {"resources": "two gpus"}, "resources must be a JSON object, got 'two gpus'"),
    (
        "gpu-type-without-gpus",
        {"resources": {"gpu_type": "A100"}},
        "gpu_type is only valid with gpus >= 1, got gpu_type='A100' with gpus=0",
    ),
    ("empty-image", {"image": ""}, "image must be a non-empty image reference such as 'python:3.11', got ''"),
    (
        "blank-image",
        {"image": "  "},
        "image must be a non-empty image reference such as 'python:3.11', got '  '",
    ),
    ("bad-gpu-fallback", {"gpu_fallback": "gpu"}, "gpu_fallback must be one of ['fail', 'cpu'], got 'gpu'"),
    (
        "bad-runtime-check",
        {"gpu_runtime_check": "strict"},
        "gpu_runtime_check must be one of ['auto', 'runtime', 'off'], got 'strict'",
    ),
    ("negative-host-gpus", {"host_gpus": -1}, f"{HOST}, got -1"),
    ("duplicate-host-gpus", {"host_gpus": ["0", "0"]}, f"{HOST} (non-empty and distinct), got ['0', '0']"),
    (
        "more-gpus-than-host",
        {"resources": {"gpus": 5}, "host_gpus": 4},
        "resources.gpus=5 is more than host_gpus declares (4)",
    ),
    (
        "gpu-ids-not-on-host",
        {"gpu_ids": ["7"], "host_gpus": 4},
        "gpu_ids ['7'] name device(s) ['7'] not in host_gpus ['0', '1', '2', '3']",
    ),
    ("command-dict", {"command": {"a": 1}}, "command must be a string or a list of strings, got {'a': 1}"),
    (
        "env-key-with-equals",
        {"env": {"A=B": "x"}},
        "env keys must be non-empty strings without '=', got ['A=B'] in env",
    ),
    ("env-not-dict", {"env": ["A=1"]}, "env must be a dict of variable names to values, got ['A=1']"),
    (
        "negative-lease-timeout",
        {"gpu_lease_timeout": -5},
        "gpu_lease_timeout must be a number of seconds >= 0, got -5",
    ),
    ("negative-grace", {"stop_grace_period": -1}, "stop_grace_period must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("kwargs", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_an_exact_message(kwargs, message):
    args = {"task_id": "t", "image": "python:3.11", **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        GpuDockerOperator(**args)


def test_the_table_is_big_enough():
    assert len(CASES) >= 15


def test_templated_values_are_validated_after_rendering():
    from airflow.sdk.exceptions import AirflowFailException

    from tests.unit.docker.conftest import context

    op = GpuDockerOperator(
        task_id="t", image="python:3.11", resources="{{ params.r }}", gpu_ids="{{ params.ids }}"
    )
    assert op.compute_resources == "{{ params.r }}"  # kept for rendering, not validated yet
    op.compute_resources = '{"gpus": -1}'  # what rendering produced
    with pytest.raises(
        AirflowFailException,
        match=r"^Invalid resources after rendering: gpus must be an integer >= 0, got -1$",
    ):
        op.execute(context())
    op.compute_resources = '{"gpus": 1}'
    op.gpu_ids = ["0", "0"]
    with pytest.raises(
        AirflowFailException, match=r"^Invalid gpu_ids after rendering: gpu_ids must not repeat a device"
    ):
        op.execute(context())
    assert "hook" not in op.__dict__  # failed before any Docker call
