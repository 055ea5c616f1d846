"""container_operator(): runtime selection, pass-through of runtime-specific arguments, lazy imports."""

from __future__ import annotations

import re

import pendulum
import pytest

from airflow_mlops_provider.operators.container import container_operator, resolve_runtime


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        (None, None, "docker"),
        (None, "kubernetes", "kubernetes"),
        (None, " Kubernetes ", "kubernetes"),
        ("docker", "kubernetes", "docker"),
        ("KUBERNETES", None, "kubernetes"),
    ],
    ids=["default", "from-config", "config-case-and-space", "argument-wins", "argument-case"],
)
def test_runtime_comes_from_argument_then_config_then_docker(monkeypatch, argument, env, expected):
    if env is None:
        monkeypatch.delenv("AIRFLOW__MLOPS__RUNTIME", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__MLOPS__RUNTIME", env)
    assert resolve_runtime(argument) == expected


@pytest.mark.parametrize(
    ("argument", "env", "message"),
    [
        ("kubernets", None, "runtime must be one of ['docker', 'kubernetes', 'local'], got 'kubernets'"),
        ("k8s", None, "runtime must be one of ['docker', 'kubernetes', 'local'], got 'k8s'"),
        (1, None, "runtime must be one of ['docker', 'kubernetes', 'local'], got 1"),
        (
            None,
            "dokcer",
            "[mlops] runtime (AIRFLOW__MLOPS__RUNTIME) must be one of ['docker', 'kubernetes', 'local'], got 'dokcer'",
        ),
    ],
    ids=["argument-typo", "argument-alias", "argument-not-a-string", "config-typo"],
)
def test_runtime_typo_names_the_value_and_the_choices(monkeypatch, argument, env, message):
    if env is None:
        monkeypatch.delenv("AIRFLOW__MLOPS__RUNTIME", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__MLOPS__RUNTIME", env)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        container_operator(argument)


def test_classes_are_the_runtime_operators_and_importable_by_name():
    from airflow_mlops_provider.operators import container
    from airflow_mlops_provider.operators.docker import GpuDockerOperator
    from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator

    docker_cls, k8s_cls = container_operator("docker"), container_operator("kubernetes")
    assert issubclass(docker_cls, GpuDockerOperator)
    assert issubclass(k8s_cls, GpuKubernetesPodOperator)
    assert container.DockerContainerOperator is docker_cls
    assert container.KubernetesContainerOperator is k8s_cls
    assert container_operator("docker") is docker_cls  # cached: one class per runtime
    assert (k8s_cls.__module__, k8s_cls.__qualname__) == (container.__name__, "KubernetesContainerOperator")


def test_runtime_specific_kwargs_are_merged_on_their_runtime_and_ignored_on_the_other():
    common = {
        "image": "python:3.11",
        "command": ["python3", "-V"],
        "env": {"A": "1"},
        "resources": {"gpus": 1},
        "docker_kwargs": {"gpu_fallback": "cpu", "docker_url": "unix://var/run/docker.sock"},
        "kubernetes_kwargs": {"namespace": "ml", "gpu_type_label": "cloud.google.com/gke-accelerator"},
    }
    on_docker = container_operator("docker")(task_id="d", **common)
    on_k8s = container_operator("kubernetes")(task_id="k", **common)
    assert on_docker.gpu_fallback == "cpu"
    assert not hasattr(on_docker, "gpu_type_label")
    assert on_k8s.namespace == "ml"
    assert on_k8s.gpu_type_label == "cloud.google.com/gke-accelerator"
    assert not hasattr(on_k8s, "gpu_fallback")
    # The shared vocabulary means the same thing on both.
    assert on_docker.compute_resources == on_k8s.compute_resources
    assert on_docker.env == on_k8s.env == {"A": "1"}


@pytest.mark.parametrize(
    ("runtime", "kwargs", "error", "message"),
    [
        (
            "kubernetes",
            {"gpu_ids": ["0"]},
            TypeError,
            "Invalid arguments were passed to KubernetesContainerOperator (task_id: t). "
            "Invalid arguments were:\n**kwargs: {'gpu_ids': ['0']}",
        ),
        (
            "docker",
            {"kubernetes_kwargs": ["namespace", "ml"]},
            ValueError,
            "kubernetes_kwargs must be a dict of kubernetes operator arguments, got ['namespace', 'ml']",
        ),
        (
            "kubernetes",
            {"namespace": "a", "kubernetes_kwargs": {"namespace": "b"}},
            ValueError,
            "kubernetes_kwargs repeats argument(s) ['namespace'] that are also given directly; "
            "pass each once, got kubernetes_kwargs={'namespace': 'b'}",
        ),
    ],
    ids=["docker-only-arg-at-top-level", "kwargs-not-a-dict", "kwargs-repeat-top-level"],
)
def test_runtime_kwargs_bad_input(runtime, kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        container_operator(runtime)(task_id="t", image="python:3.11", **kwargs)


@pytest.mark.parametrize("as_object", [False, True], ids=["resources-dict", "resources-object"])
@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_partial_expand_kwargs_serialises_on_both_runtimes(runtime, as_object):
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_mlops_provider.compute import Resources

    # Airflow reads a non-dict `resources` in partial() as its own executor Resources; a
    # Resources object must therefore travel as its dict, or the scheduler cannot load the DAG.
    resources = Resources(cpus=1) if as_object else {"cpus": 1}
    op_cls = container_operator(runtime)
    with DAG(f"expand_{runtime}", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        op_cls.partial(
            task_id="trial",
            image="python:3.11",
            command=["python3", "-V"],
            resources=resources,
            docker_kwargs={"gpu_fallback": "cpu"},
            kubernetes_kwargs={"namespace": "ml"},
        ).expand_kwargs([{"env": {"T": "0"}}, {"env": {"T": "1"}, "resources": {"gpus": 1}}])
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    task = restored.task_dict["trial"]
    assert task.task_type == op_cls.__name__
    assert task.partial_kwargs["resources"] == {"cpus": 1.0}  # our dict, not Airflow's own Resources


# Import isolation (runtime=docker leaves `kubernetes` out of sys.modules) is checked in a fresh
# interpreter by tests/unit/test_import_cost.py; benchmarks/parse_time.py reports both directions.


def test_local_runtime_returns_the_local_process_operator_and_ignores_runtime_dicts():
    from airflow_mlops_provider.operators.local import LocalProcessOperator

    cls = container_operator("local")
    assert cls is LocalProcessOperator
    op = cls(
        task_id="t",
        image="ignored:1",
        command=["true"],
        docker_kwargs={"gpu_ids": ["0"]},
        kubernetes_kwargs={"namespace": "ml"},
    )
    assert op.ignored_arguments == ["docker_kwargs", "kubernetes_kwargs"]
