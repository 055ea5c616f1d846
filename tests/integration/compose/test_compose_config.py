"""The compose stack as Debian's ``docker-compose config`` validates and resolves it (cheap: no engine)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.compose.conftest import resolved_config

pytestmark = pytest.mark.integration

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
ONE_SHOT = {"airflow-init"}
SERVICES = {"postgres", "redis", "s3", "mlflow", *AIRFLOW_SERVICES, *ONE_SHOT}
BUILT_BY = {  # service -> Dockerfile (relative to the repo root)
    "postgres": "deploy/postgres/Dockerfile",
    "redis": "deploy/redis/Dockerfile",
    "s3": "deploy/s3/Dockerfile",
    "mlflow": "deploy/mlflow/Dockerfile",
    "airflow-init": "deploy/airflow/Dockerfile",
}


def _dockerfile(service: dict[str, Any]) -> str:
    build = service["build"]
    context = build["context"]
    path = f"{context}/{build.get('dockerfile', 'Dockerfile')}"
    return str(Path(path).resolve().relative_to(REPO_ROOT))


def test_services_are_the_full_stack(compose_config):
    assert set(compose_config["services"]) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES - ONE_SHOT))
def test_every_long_running_service_has_a_healthcheck(compose_config, name):
    check = compose_config["services"][name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name} disables its healthcheck"
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert len(check["test"]) > 1
    assert check.get("interval")
    assert check.get("retries")


def test_dependents_wait_for_healthy_services(compose_config):
    services = compose_config["services"]
    for name in [*AIRFLOW_SERVICES, "mlflow", "airflow-init"]:
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["airflow-init"] == {
            "condition": "service_completed_successfully"
        }, name
    assert services["mlflow"]["depends_on"]["s3"] == {"condition": "service_healthy"}
    assert services["airflow-scheduler"]["depends_on"]["mlflow"] == {"condition": "service_healthy"}
    assert services["airflow-scheduler"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_scheduler_is_the_gpu_worker(compose_config):
    scheduler = compose_config["services"]["airflow-scheduler"]
    devices = scheduler["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # GpuDockerOperator starts the training containers on the host's engine.
    assert ("/var/run/docker.sock", "/var/run/docker.sock") in _volumes(scheduler)
    assert scheduler["environment"]["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    for name in set(AIRFLOW_SERVICES) - {"airflow-scheduler"}:
        assert "deploy" not in compose_config["services"][name], f"{name} should not reserve GPUs"


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) pairs from compose v1's short syntax or v2's long one."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
        else:
            pairs.append((volume.get("source", ""), volume["target"]))
    return pairs


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) triples from compose v1's short syntax or v2's long one."""
    triples = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host_ip, published, target = port.split("/")[0].rsplit(":", 2)
            triples.append((host_ip, int(published), int(target)))
        else:
            triples.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return triples


@pytest.mark.parametrize("name", sorted(BUILT_BY))
def test_images_build_from_local_dockerfiles_with_base_image_arg(compose_config, name):
    service = compose_config["services"][name]
    assert service["build"]["args"] == {"BASE_IMAGE": "mlops-base:bookworm"}
    dockerfile = _dockerfile(service)
    assert dockerfile == BUILT_BY[name]
    text = (REPO_ROOT / dockerfile).read_text()
    assert "ARG BASE_IMAGE=mlops-base:bookworm" in text
    # Every stage starts from the base image (or an earlier stage): nothing comes from a registry.
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert froms, dockerfile
    assert all(image == "${BASE_IMAGE}" for image in froms), froms


def test_base_image_build_arg_follows_the_environment():
    config = resolved_config(BASE_IMAGE="registry.example/debian-python:12")
    for name in BUILT_BY:
        assert config["services"][name]["build"]["args"] == {
            "BASE_IMAGE": "registry.example/debian-python:12"
        }


def test_airflow_services_share_the_image_built_from_the_repo(compose_config):
    services = compose_config["services"]
    image = services["airflow-init"]["image"]
    assert image == "mlops-stack-airflow:latest"
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["image"] == image, name
        assert services[name]["command"][0] == command, name
        assert "build" not in services[name], f"{name} should reuse airflow-init's image"
    assert services["airflow-init"]["command"] == ["init"]
    # The provider is installed from the repo's sources, with every extra.
    dockerfile = (REPO_ROOT / "deploy/airflow/Dockerfile").read_text()
    assert "COPY airflow_mlops_provider/ /src/airflow_mlops_provider/" in dockerfile
    assert 'pip install --quiet "/src[all]"' in dockerfile
    # Airflow 3 on PostgreSQL needs the sync driver and the async one it derives from the URI.
    assert "psycopg2-binary asyncpg" in dockerfile


def test_airflow_runs_on_postgres_with_local_executor(compose_config):
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = compose_config["services"][name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
            "postgresql+psycopg2://airflow:airflow@postgres:5432/airflow"
        ), name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW_CONN_MLFLOW_DEFAULT"].startswith('{"conn_type": "mlflow", "host": "mlflow"')
    postgres = compose_config["services"]["postgres"]["environment"]
    assert postgres["MLOPS_DATABASES"] == "airflow:airflow:airflow mlflow:mlflow:mlflow"


def test_mlflow_uses_postgres_and_s3_through_boto3(compose_config):
    env = compose_config["services"]["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"
    assert env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"]
    entrypoint = (REPO_ROOT / "deploy/mlflow/entrypoint.py").read_text()
    assert '"--artifacts-destination",\n    f"s3://{bucket}/",' in entrypoint


def test_checkpoints_go_to_the_stacks_s3_store(compose_config):
    """Every Airflow service checkpoints to s3://checkpoints on the stack's S3 service, and the bucket exists."""
    mlflow_env = compose_config["services"]["mlflow"]["environment"]
    assert mlflow_env["MLOPS_EXTRA_BUCKETS"].split() == ["checkpoints"]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = compose_config["services"][name]["environment"]
        assert env["AIRFLOW__MLOPS__CHECKPOINT_URI"] == "s3://checkpoints/airflow", name
        assert env["AIRFLOW__MLOPS__CHECKPOINT_CONN_ID"] == "aws_checkpoints", name
        conn = json.loads(env["AIRFLOW_CONN_AWS_CHECKPOINTS"])
        assert conn["conn_type"] == "aws"
        assert conn["extra"]["endpoint_url"] == "http://s3:9000"
        # The same dev-only keys the S3 store's other client (MLflow) uses.
        assert (conn["login"], conn["password"]) == (
            mlflow_env["AWS_ACCESS_KEY_ID"],
            mlflow_env["AWS_SECRET_ACCESS_KEY"],
        )
    entrypoint = (REPO_ROOT / "deploy/mlflow/entrypoint.py").read_text()
    assert 'os.environ.get("MLOPS_EXTRA_BUCKETS", "").split()' in entrypoint


def test_redis_is_the_feast_online_store(compose_config):
    services = compose_config["services"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    env = services["airflow-scheduler"]["environment"]
    assert env["MLOPS_FEAST_REDIS"] == "redis:6379"
    feast = json.loads(env["AIRFLOW_CONN_FEAST_DEFAULT"])
    assert feast["conn_type"] == "feast"
    assert feast["extra"]["repo_path"] == "/tmp/mlops-stack/example/feature_repo"
    store = yaml.safe_load(feast["extra"]["feature_store_yaml"])
    assert store["online_store"] == {"type": "redis", "connection_string": "redis:6379"}
    assert store["registry"] == "/tmp/mlops-stack/example/feature_repo/data/registry.db"


def test_published_ports_bind_loopback_and_follow_the_environment():
    config = resolved_config(MLOPS_AIRFLOW_PORT="18080", MLOPS_MLFLOW_PORT="15000")
    ports = {name: _ports(service) for name, service in config["services"].items() if service.get("ports")}
    assert ports["airflow-apiserver"] == [("127.0.0.1", 18080, 8080)]
    assert ports["mlflow"] == [("127.0.0.1", 15000, 5000)]
    assert set(ports) == {"airflow-apiserver", "mlflow", "redis", "s3"}
    for name, entries in ports.items():
        assert all(host_ip == "127.0.0.1" for host_ip, _, _ in entries), name


def test_network_has_a_fixed_name_for_task_containers(compose_config):
    assert compose_config["networks"]["default"]["name"] == "mlops-stack"


def test_cpu_override_swaps_in_a_scheduler_without_gpu_reservation(compose_config):
    config = resolved_config("deploy/compose.cpu.yml")
    services = config["services"]
    assert services["airflow-scheduler"]["profiles"] == ["gpu"]
    cpu = services["airflow-scheduler-cpu"]
    assert "deploy" not in cpu
    assert "profiles" not in cpu
    # Everything else matches the GPU scheduler, so the two definitions cannot drift apart.
    gpu = compose_config["services"]["airflow-scheduler"]
    for key in ("image", "command", "environment", "volumes", "depends_on", "healthcheck", "init"):
        assert _sorted(cpu[key]) == _sorted(gpu[key]), key


def _sorted(value: Any) -> Any:
    return sorted(value) if isinstance(value, list) else value
