"""``.partial(resources=Resources(...))`` survives DAG serialisation on every runtime's operator."""

from __future__ import annotations

import pendulum
import pytest

from airflow_mlops_provider.compute import Resources


def _operator(name):
    if name == "docker":
        from airflow_mlops_provider.operators.docker import GpuDockerOperator

        return GpuDockerOperator
    if name == "kubernetes":
        from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator

        return GpuKubernetesPodOperator
    from airflow_mlops_provider.operators.local import LocalProcessOperator

    return LocalProcessOperator


@pytest.mark.parametrize("name", ["docker", "kubernetes", "local"])
def test_resources_object_in_partial_travels_as_its_dict(name):
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    op_cls = _operator(name)
    with DAG(f"partial_{name}", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        op_cls.partial(
            task_id="trial",
            image="python:3.11",
            command=["python3", "-V"],
            resources=Resources(cpus=1, memory="1Gi"),
        ).expand_kwargs([{"env": {"T": "0"}}, {"env": {"T": "1"}}])
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    task = restored.task_dict["trial"]
    assert task.partial_kwargs["resources"] == {"cpus": 1.0, "memory": 1024**3}
    assert Resources.from_dict(task.partial_kwargs["resources"]) == Resources(cpus=1, memory="1Gi")
