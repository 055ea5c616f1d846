"""Bad input to GpuDockerOperator: each case fails at DAG parse time with an exact message."""

from __future__ import annotations

import re

import pytest

from airflow_mlops_provider.operators.docker import GpuDockerOperator

MEM = "must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes"
HOST = "host_gpus must be a GPU count >= 0 or a list of device ids such as ['0', '1']"
A100_HOST = {"0": "NVIDIA A100-SXM4-80GB", "1": "NVIDIA L4", "2": "NVIDIA A100-SXM4-80GB"}

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
    (
        "negative-grace",
        {"stop_grace_period": -1},
        "stop_grace_period must be an integer from 0 to 3 (Airflow SIGKILLs a killed task 5 s after "
        "SIGTERM, and the container must be stopped and removed before that), got -1",
    ),
    (
        "grace-past-the-kill",
        {"stop_grace_period": 5},
        "stop_grace_period must be an integer from 0 to 3 (Airflow SIGKILLs a killed task 5 s after "
        "SIGTERM, and the container must be stopped and removed before that), got 5",
    ),
    (
        "memory-clashes-with-mem-limit",
        {"resources": {"memory": "1Gi"}, "mem_limit": "1g"},
        "resources.memory and mem_limit both set the same thing; pass only one, "
        "got resources.memory=1073741824 and mem_limit='1g'",
    ),
    (
        "shm-size-clashes-with-shm-size",
        {"resources": {"shm_size": "64Mi"}, "shm_size": 1000},
        "resources.shm_size and shm_size both set the same thing; pass only one, "
        "got resources.shm_size=67108864 and shm_size=1000",
    ),
    (
        "gpus-clash-with-device-requests",
        {"resources": {"gpus": 1}, "device_requests": [{"Driver": "nvidia", "Count": 1}]},
        "resources.gpus and device_requests both set the same thing; pass only one, "
        "got resources.gpus=1 and device_requests=[{'Driver': 'nvidia', 'Count': 1}]",
    ),
    (
        "gpu-ids-clash-with-device-requests",
        {"gpu_ids": ["0"], "device_requests": [{"Driver": "nvidia", "Count": 1}]},
        "gpu_ids and device_requests both set the same thing; pass only one, "
        "got gpu_ids=['0'] and device_requests=[{'Driver': 'nvidia', 'Count': 1}]",
    ),
    (
        "unknown-auto-remove",
        {"auto_remove": "always"},
        "auto_remove must be one of ['never', 'success', 'force'], got 'always'",
    ),
    (
        "keep-container-contradicts-auto-remove",
        {"keep_container": True, "auto_remove": "success"},
        "keep_container=True keeps the container but auto_remove='success' removes it; "
        "pass only one (keep_container=True is auto_remove='never')",
    ),
    (
        "host-gpus-mapping-without-name",
        {"host_gpus": {"0": ""}},
        "host_gpus as a mapping must map distinct device ids to GPU names such as "
        "{'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA A100-SXM4-80GB'}, got {'0': ''}",
    ),
    (
        "gpu-type-not-on-host",
        {"resources": {"gpus": 1, "gpu_type": "NVIDIA-H100-80GB-HBM3"}, "host_gpus": A100_HOST},
        "host_gpus has 0 GPU(s) of type 'NVIDIA-H100-80GB-HBM3', fewer than gpus=1; its GPUs are "
        "{'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA L4', '2': 'NVIDIA A100-SXM4-80GB'}",
    ),
    (
        "too-few-gpus-of-type",
        {"resources": {"gpus": 3, "gpu_type": "NVIDIA-A100-SXM4-80GB"}, "host_gpus": A100_HOST},
        "host_gpus has 2 GPU(s) of type 'NVIDIA-A100-SXM4-80GB', fewer than gpus=3; its GPUs are "
        "{'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA L4', '2': 'NVIDIA A100-SXM4-80GB'}",
    ),
    (
        "gpu-ids-of-another-type",
        {"resources": {"gpus": 2, "gpu_type": "NVIDIA L4"}, "gpu_ids": ["1", "2"], "host_gpus": A100_HOST},
        "host_gpus cannot serve gpu_ids=['1', '2'] of type 'NVIDIA L4': device(s) ['2'] are not of that "
        "type; its GPUs are {'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA L4', '2': 'NVIDIA A100-SXM4-80GB'}",
    ),
    (
        "gpu-type-with-unnamed-host-gpus",
        {"resources": {"gpus": 1, "gpu_type": "NVIDIA-A100-SXM4-80GB"}, "host_gpus": 2},
        "Cannot check gpu_type='NVIDIA-A100-SXM4-80GB' for the Docker host: its GPU inventory from "
        "host_gpus (['0', '1']) has no GPU names. Declare the names as a mapping of device ids to "
        "nvidia-smi names, e.g. host_gpus={'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA A100-SXM4-80GB'} "
        'or [mlops] docker_host_gpus = {"0": "NVIDIA A100-SXM4-80GB"}, or leave both unset so that '
        "nvidia-smi discovers them.",
    ),
    (
        "gpu-type-on-amd",
        {"resources": {"gpus": 1, "gpu_vendor": "amd", "gpu_type": "MI300X"}},
        "gpu_type is checked on Docker only for NVIDIA GPUs (against nvidia-smi names), "
        "got gpu_type='MI300X' with gpu_vendor='amd'",
    ),
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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resources": {"gpus": 1}, "mem_limit": "1g", "shm_size": 1000},
        {"resources": {"memory": "1Gi"}, "device_requests": [{"Driver": "nvidia", "Count": 1}]},
        {"resources": {"cpus": 2}, "cpus": 4},
        {"keep_container": True, "auto_remove": "never"},
        {"resources": {"gpus": 2, "gpu_type": "nvidia a100 sxm4 80gb"}, "host_gpus": A100_HOST},
    ],
    ids=["other-fields", "gpus-unset", "cpus-is-cpu-shares", "keep-and-never", "gpu-type-any-spelling"],
)
def test_arguments_that_do_not_clash_are_accepted(kwargs):
    GpuDockerOperator(task_id="t", image="python:3.11", **kwargs)


def test_a_templated_clash_is_a_configuration_error_after_rendering():
    from airflow_mlops_provider.exceptions import ContainerConfigError
    from tests.unit.docker.conftest import context

    op = GpuDockerOperator(task_id="t", image="python:3.11", resources="{{ params.r }}", mem_limit="1g")
    op.compute_resources = '{"memory": "2Gi"}'
    with pytest.raises(
        ContainerConfigError,
        match=r"^Invalid resources after rendering: resources\.memory and mem_limit both set the same "
        r"thing; pass only one, got resources\.memory=2147483648 and mem_limit='1g'$",
    ):
        op.execute(context())
    assert "hook" not in op.__dict__


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "image",
            "",
            "Invalid image after rendering: image must be a non-empty image reference such as 'python:3.11', got ''",
        ),
        (
            "command",
            {"a": 1},
            "Invalid command after rendering: command must be a string or a list of strings, got {'a': 1}",
        ),
        (
            "env",
            ["A=1"],
            "Invalid env after rendering: env must be a dict of variable names to values, got ['A=1']",
        ),
        (
            "env",
            {"A=B": "x"},
            "Invalid env after rendering: env keys must be non-empty strings without '=', got ['A=B'] in env",
        ),
    ],
    ids=["empty-image", "command-dict", "env-not-dict", "env-bad-key"],
)
def test_rendered_arguments_raise_container_config_error(field, value, message):
    from airflow_mlops_provider.exceptions import ContainerConfigError
    from tests.unit.docker.conftest import context

    op = GpuDockerOperator(task_id="t", image="{{ params.image }}", env="{{ params.env }}")
    op.image, op.env = "python:3.11", {}
    setattr(op, field, value)
    with pytest.raises(ContainerConfigError, match=f"^{re.escape(message)}$"):
        op.execute(context())
    assert "hook" not in op.__dict__
