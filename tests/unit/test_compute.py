"""Resources: validation, round-trips and the Docker/Kubernetes translations."""

from __future__ import annotations

import json
import pickle

import pytest

from airflow_mlops_provider.compute import (
    Resources,
    build_device_requests,
    build_docker_host_config,
    build_gpu_node_affinity,
    build_gpu_tolerations,
    build_k8s_resource_requirements,
    build_shm_volume,
    format_k8s_quantity,
    parse_memory,
)

GiB = 1024**3
MiB = 1024**2

BAD_INPUTS = [
    ({"gpus": -1}, "gpus must be an integer >= 0, got -1"),
    ({"gpus": 1.5}, "gpus must be an integer >= 0, got 1.5"),
    ({"gpus": "2"}, "gpus must be an integer >= 0, got '2'"),
    ({"gpus": True}, "gpus must be an integer >= 0, got True"),
    ({"gpus": None}, "gpus must be an integer >= 0, got None"),
    ({"cpus": 0}, "cpus must be a number > 0, got 0"),
    ({"cpus": -2}, "cpus must be a number > 0, got -2"),
    ({"cpus": "2"}, "cpus must be a number > 0, got '2'"),
    ({"cpus": float("nan")}, "cpus must be a number > 0, got nan"),
    ({"cpus": float("inf")}, "cpus must be a number > 0, got inf"),
    ({"cpus": False}, "cpus must be a number > 0, got False"),
    (
        {"memory": "lots"},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got 'lots'",
    ),
    (
        {"memory": "8GB"},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got '8GB'",
    ),
    (
        {"memory": "-1Gi"},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got '-1Gi'",
    ),
    (
        {"memory": "0"},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got '0'",
    ),
    (
        {"memory": 0},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got 0",
    ),
    (
        {"memory": 1.5},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got 1.5",
    ),
    (
        {"memory": "8 Zi"},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got '8 Zi'",
    ),
    (
        {"memory": ["8Gi"]},
        "memory must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got ['8Gi']",
    ),
    (
        {"shm_size": "big"},
        "shm_size must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got 'big'",
    ),
    (
        {"shm_size": "0Mi"},
        "shm_size must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes, got '0Mi'",
    ),
    ({"gpu_vendor": "intel"}, "gpu_vendor must be one of ['amd', 'nvidia'], got 'intel'"),
    ({"gpu_vendor": None}, "gpu_vendor must be one of ['amd', 'nvidia'], got None"),
    ({"gpu_type": "A100"}, "gpu_type is only valid with gpus >= 1, got gpu_type='A100' with gpus=0"),
    ({"gpus": 1, "gpu_type": ""}, "gpu_type must be a non-empty string or None, got ''"),
    ({"gpus": 1, "gpu_type": 100}, "gpu_type must be a non-empty string or None, got 100"),
]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    BAD_INPUTS,
    ids=[f"{k}={v!r}" for kw, _ in BAD_INPUTS for k, v in list(kw.items())[-1:]],
)
def test_bad_values_raise_value_error_naming_field_and_value(kwargs, message):
    with pytest.raises(ValueError) as excinfo:
        Resources(**kwargs)
    assert str(excinfo.value) == message
    # Building from a dict (DAG params, XCom) gives the same message.
    with pytest.raises(ValueError) as excinfo:
        Resources.from_dict(kwargs)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"gpu": 1},
            "resources has unknown field(s) ['gpu']; expected some of ['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size']",
        ),
        ("not json", "resources must be a JSON object, got 'not json'"),
        (
            "[1, 2]",
            "resources must be a mapping of ['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size'], got [1, 2]",
        ),
        (42, "resources must be a Resources, a dict or its JSON text, got int: 42"),
    ],
    ids=["unknown-key", "bad-json", "json-list", "wrong-type"],
)
def test_coerce_rejects_bad_containers(value, message):
    with pytest.raises(ValueError) as excinfo:
        Resources.coerce(value)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 * MiB),
        ("8Gi", 8 * GiB),
        ("4g", 4 * GiB),
        ("4G", 4 * 1000**3),
        ("1.5Gi", int(1.5 * GiB)),
        ("100M", 100 * 1000**2),
        ("2k", 2048),
        ("2K", 2000),
        ("1048576", MiB),
        (1048576, MiB),
        (" 16 Gi ", 16 * GiB),
        ("1Ti", 1024**4),
    ],
    ids=lambda v: repr(v),
)
def test_memory_units_normalise_to_bytes(text, expected):
    assert parse_memory(text) == expected


def test_equal_quantities_in_different_units_are_equal_and_hash_equal():
    a, b, c = Resources(memory="1Gi"), Resources(memory="1g"), Resources(memory=GiB)
    assert a == b == c
    assert len({a, b, c}) == 1


@pytest.mark.parametrize(
    "resources",
    [
        Resources(),
        Resources(cpus=2, memory="8Gi", gpus=2, gpu_type="NVIDIA-A100-SXM4-80GB", shm_size="2Gi"),
        Resources(gpus=1, gpu_vendor="amd"),
        Resources(cpus=0.5),
    ],
    ids=["default", "full", "amd", "fractional-cpu"],
)
def test_round_trips(resources):
    as_dict = resources.to_dict()
    assert Resources.from_dict(as_dict) == resources
    assert Resources.from_json(resources.to_json()) == resources
    assert Resources.from_json(json.dumps(as_dict)) == resources
    assert pickle.loads(pickle.dumps(resources)) == resources
    assert hash(pickle.loads(pickle.dumps(resources))) == hash(resources)
    assert Resources.deserialize(resources.serialize(), Resources.__version__) == resources
    assert Resources.coerce(as_dict) == Resources.coerce(resources.to_json()) == resources
    json.dumps(as_dict)  # JSON-safe


def test_frozen():
    res = Resources(gpus=1)
    with pytest.raises(AttributeError):
        res.gpus = 2  # type: ignore[misc]


def test_to_dict_keeps_only_non_defaults():
    assert Resources().to_dict() == {}
    assert Resources(gpus=2, memory="16Gi").to_dict() == {"gpus": 2, "memory": 16 * GiB}


# -- Docker terms -------------------------------------------------------------------------------


def test_docker_host_config_for_full_request():
    res = Resources(cpus=1.5, memory="2Gi", gpus=2, shm_size="1Gi")
    cfg = build_docker_host_config(res)
    assert cfg["mem_limit"] == 2 * GiB
    assert cfg["nano_cpus"] == 1_500_000_000
    assert cfg["shm_size"] == GiB
    (request,) = cfg["device_requests"]
    assert request["Driver"] == "nvidia"
    assert request["Count"] == 2
    assert request["Capabilities"] == [["gpu"]]
    assert "cpu_shares" not in cfg


def test_docker_explicit_gpu_ids():
    (request,) = build_device_requests(Resources(), gpu_ids=["1", "3"])
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Count"] == 0 or request.get("Count") in (None, 0)


def test_docker_no_gpu_means_no_device_requests():
    assert build_docker_host_config(Resources(cpus=1)) == {"nano_cpus": 1_000_000_000}


def test_docker_amd_uses_device_nodes():
    cfg = build_docker_host_config(Resources(gpus=1, gpu_vendor="amd"))
    assert "device_requests" not in cfg
    assert cfg["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]


@pytest.mark.parametrize(
    ("gpus", "gpu_ids", "message"),
    [
        (0, ["1", "1"], "gpu_ids must not repeat a device, got ['1', '1'] (repeated: ['1'])"),
        (
            1,
            ["0", "1"],
            "gpu_ids lists 2 device(s) ['0', '1'] but resources.gpus is 1; they must agree (or leave gpus at 0 to take the count from gpu_ids)",
        ),
        (0, "0,1", "gpu_ids must be a list of device ids such as ['0', '1'], got '0,1'"),
        (0, [], "gpu_ids must be a non-empty list of non-empty device ids, got []"),
    ],
    ids=["duplicate", "disagree", "string", "empty"],
)
def test_gpu_ids_validation(gpus, gpu_ids, message):
    with pytest.raises(ValueError) as excinfo:
        build_device_requests(Resources(gpus=gpus), gpu_ids=gpu_ids)
    assert str(excinfo.value) == message


# -- Kubernetes terms ---------------------------------------------------------------------------


def test_k8s_requirements_nvidia():
    req = build_k8s_resource_requirements(Resources(cpus=2, memory="16Gi", gpus=2))
    assert req.limits == {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert req.requests == req.limits


def test_k8s_requirements_amd_and_fractional_cpu():
    req = build_k8s_resource_requirements(Resources(cpus=0.25, gpus=1, gpu_vendor="amd"))
    assert req.limits == {"cpu": "250m", "amd.com/gpu": "1"}


def test_k8s_no_gpu_keys_without_gpus():
    req = build_k8s_resource_requirements(Resources(memory="512Mi"))
    assert all("gpu" not in key for key in req.limits)
    assert build_gpu_tolerations(Resources()) == []
    assert build_gpu_node_affinity(Resources()) is None


def test_k8s_affinity_and_tolerations():
    res = Resources(gpus=1, gpu_type="NVIDIA-H100-80GB-HBM3")
    affinity = build_gpu_node_affinity(res)
    term = affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms[0]
    expr = term.match_expressions[0]
    assert (expr.key, expr.operator, expr.values) == (
        "nvidia.com/gpu.product",
        "In",
        ["NVIDIA-H100-80GB-HBM3"],
    )
    assert build_gpu_node_affinity(res, "gpu.example.com/model").node_affinity is not None
    (tol,) = build_gpu_tolerations(res)
    assert (tol.key, tol.operator, tol.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    (custom,) = build_gpu_tolerations(
        res, [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    )
    assert custom.value == "ml"


@pytest.mark.parametrize(
    ("tolerations", "message"),
    [
        ({"key": "x"}, "gpu_tolerations must be a list of toleration dicts"),
        (["nvidia.com/gpu"], "gpu_tolerations must be a list of dicts like"),
        ([{"key": "x", "operator": "In"}], "operator must be 'Exists' or 'Equal', got 'In'"),
        (
            [{"key": "x", "effect": "NoRun"}],
            "effect must be one of 'NoSchedule', 'PreferNoSchedule', 'NoExecute', got 'NoRun'",
        ),
        ([{"key": "x", "colour": "red"}], "has unknown key(s) ['colour']"),
    ],
    ids=["dict-not-list", "string-item", "bad-operator", "bad-effect", "unknown-key"],
)
def test_toleration_shape_errors(tolerations, message):
    with pytest.raises(ValueError, match=None) as excinfo:
        build_gpu_tolerations(Resources(gpus=1), tolerations)
    assert message in str(excinfo.value)


def test_shm_volume():
    volume, mount = build_shm_volume(Resources(shm_size="2Gi"))
    assert volume.empty_dir.medium == "Memory"
    assert volume.empty_dir.size_limit == "2Gi"
    assert mount.mount_path == "/dev/shm"
    assert build_shm_volume(Resources()) is None


def test_format_quantity():
    assert format_k8s_quantity(3 * GiB) == "3Gi"
    assert format_k8s_quantity(1536 * MiB) == "1536Mi"
    assert format_k8s_quantity(1000) == "1000"
