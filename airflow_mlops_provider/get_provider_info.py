"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point.

Airflow reads this without importing any hook, so connection forms are declared here
(``conn-fields`` and ``ui-field-behaviour``) rather than in hook methods. The operator, hook,
sensor and trigger modules are listed by integration, as the apache-airflow providers list
theirs; ``tests/unit/test_provider_info.py`` fails when a module holding one of ours is missing.

The ``mlops`` plugin is not listed here: Airflow loads the plugins of provider info only when
``[core] lazy_discover_providers`` is off, so the plugin is registered once, through the
``airflow.plugins`` entry point, which Airflow always reads.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops_provider import __version__


def _mlflow_connection() -> dict[str, Any]:
    return {
        "hook-class-name": "airflow_mlops_provider.hooks.mlflow.MlflowHook",
        "hook-name": "MLflow",
        "connection-type": "mlflow",
        "conn-fields": {
            "tracking_uri": {
                "label": "Tracking URI",
                "description": "Full tracking URI (sqlite:///..., file:///..., http://...). "
                "Overrides host/port/schema when set.",
                "schema": {"type": ["string", "null"]},
            },
            "registry_uri": {
                "label": "Registry URI",
                "description": "Model registry URI when it differs from the tracking URI.",
                "schema": {"type": ["string", "null"]},
            },
            "insecure_skip_verify": {
                "label": "Skip TLS verification",
                "description": "Do not verify the tracking server's TLS certificate.",
                "schema": {"type": ["boolean", "null"]},
            },
            "ui_url": {
                "label": "UI URL",
                "description": "Base URL of the MLflow UI, used by the task's extra links.",
                "schema": {"type": ["string", "null"]},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": [],
            "relabeling": {
                "host": "Tracking server host",
                "schema": "Scheme (http or https)",
                "login": "Username",
                "password": "Token",
            },
            "placeholders": {
                "host": "mlflow.example.com",
                "port": "5000",
                "schema": "https",
                "password": "MLflow token (sent as a bearer token)",
            },
        },
    }


def _feast_connection() -> dict[str, Any]:
    return {
        "hook-class-name": "airflow_mlops_provider.hooks.feast.FeastHook",
        "hook-name": "Feast",
        "connection-type": "feast",
        "conn-fields": {
            "repo_path": {
                "label": "Feature repo path",
                "description": "Directory that holds feature_store.yaml and the feature definitions.",
                "schema": {"type": ["string", "null"]},
            },
            "feature_store_yaml": {
                "label": "feature_store.yaml",
                "description": "The YAML itself, when the repo path holds only definitions or is absent.",
                "schema": {"type": ["string", "null"]},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": ["host", "port", "schema", "login"],
            "relabeling": {"password": "Online store password"},
            "placeholders": {"repo_path": "/opt/airflow/feature_repo"},
        },
    }


def get_provider_info() -> dict[str, Any]:
    """Return the metadata Airflow's providers manager expects from a provider package."""
    return {
        "package-name": "airflow-mlops-provider",
        "name": "MLOps",
        "description": "GPU-aware Docker and Kubernetes execution, parameterized sweeps, "
        "MLflow model registry and Feast feature store for Apache Airflow 3.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Docker",
                "external-doc-url": "https://docs.docker.com/",
                "tags": ["software"],
            },
            {
                "integration-name": "Kubernetes",
                "external-doc-url": "https://kubernetes.io/",
                "tags": ["software"],
            },
            {
                "integration-name": "Local process",
                "external-doc-url": "https://docs.python.org/3/library/subprocess.html",
                "tags": ["software"],
            },
            {
                "integration-name": "MLflow",
                "external-doc-url": "https://mlflow.org/docs/latest/",
                "tags": ["software"],
            },
            {
                "integration-name": "Parameter sweeps",
                "external-doc-url": "https://airflow.apache.org/docs/apache-airflow/stable/authoring-and-scheduling/dynamic-task-mapping.html",
                "tags": ["software"],
            },
            {
                "integration-name": "Feast",
                "external-doc-url": "https://docs.feast.dev/",
                "tags": ["software"],
            },
        ],
        "operators": [
            {"integration-name": "Docker", "python-modules": ["airflow_mlops_provider.operators.docker"]},
            {
                "integration-name": "Kubernetes",
                "python-modules": ["airflow_mlops_provider.operators.kubernetes"],
            },
            {
                "integration-name": "Local process",
                "python-modules": ["airflow_mlops_provider.operators.local"],
            },
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "airflow_mlops_provider.operators.mlflow",
                    "airflow_mlops_provider.operators.mlflow_common",
                    "airflow_mlops_provider.operators.mlflow_register",
                    "airflow_mlops_provider.operators.mlflow_alias",
                ],
            },
            {"integration-name": "Feast", "python-modules": ["airflow_mlops_provider.operators.feast"]},
            {
                "integration-name": "Parameter sweeps",
                "python-modules": ["airflow_mlops_provider.sweeps.container"],
            },
        ],
        "hooks": [
            {"integration-name": "Kubernetes", "python-modules": ["airflow_mlops_provider.hooks.kubernetes"]},
            {
                "integration-name": "Local process",
                "python-modules": ["airflow_mlops_provider.hooks.subprocess"],
            },
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "airflow_mlops_provider.hooks.mlflow",
                    "airflow_mlops_provider.hooks.mlflow_base",
                    "airflow_mlops_provider.hooks.mlflow_versions",
                ],
            },
            {"integration-name": "Feast", "python-modules": ["airflow_mlops_provider.hooks.feast"]},
        ],
        "sensors": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops_provider.sensors.mlflow"]},
            {"integration-name": "Feast", "python-modules": ["airflow_mlops_provider.sensors.feast"]},
        ],
        "triggers": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops_provider.triggers.mlflow"]},
            {"integration-name": "Feast", "python-modules": ["airflow_mlops_provider.triggers.feast"]},
        ],
        "connection-types": [_mlflow_connection(), _feast_connection()],
        "asset-uris": [
            {"schemes": ["feast"], "handler": "airflow_mlops_provider.assets.feast.sanitize_uri"},
            {"schemes": ["mlflow-model"], "handler": "airflow_mlops_provider.assets.mlflow.sanitize_uri"},
        ],
        "extra-links": [
            "airflow_mlops_provider.links.mlflow.MlflowRunLink",
            "airflow_mlops_provider.links.mlflow.MlflowModelVersionLink",
        ],
        "config": {
            "mlops": {
                "description": "Settings of airflow-mlops-provider.",
                "options": {
                    "runtime": {
                        "description": "Where container_operator() runs containers: "
                        "'docker', 'kubernetes' or 'local' (a plain process on the worker).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "kubernetes",
                        "default": "docker",
                    },
                    "docker_host_gpus": {
                        "description": "GPUs of the Docker host(s) GpuDockerOperator starts "
                        "containers on: a count ('4'), device ids ('0,1,3'), or JSON: an id-to-name "
                        'mapping for every host (\'{"0": "NVIDIA A100-SXM4-80GB"}\', which lets '
                        "gpu_type be checked), or an object keyed by docker_url whose values are a "
                        "count, ids or such a mapping. Empty: discover them with nvidia-smi in a "
                        "helper container.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "4",
                        "default": "",
                    },
                    "gpu_lease_dir": {
                        "description": "Directory where GpuDockerOperator records which GPU "
                        "device ids are leased on this host (shared by all workers of the host).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/airflow-mlops/gpu-leases",
                        "default": "/tmp/airflow-mlops-gpu-leases",
                    },
                    "checkpoint_uri": {
                        "description": "Default checkpoint location of the container operators, "
                        "container_trials and trial_task when their checkpoint argument is not "
                        "given: a local or shared path, or s3://bucket/prefix. Empty: no "
                        "checkpoints unless a task asks for them.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "s3://ml-checkpoints/airflow",
                        "default": "",
                    },
                    "checkpoint_conn_id": {
                        "description": "Airflow aws connection for s3:// checkpoints (login: "
                        "access key id, password: secret key, extras endpoint_url, region_name, "
                        "aws_session_token). Empty: boto3's standard credential chain.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "aws_checkpoints",
                        "default": "",
                    },
                    "checkpoint_endpoint_url": {
                        "description": "Endpoint URL of an S3-compatible store for s3:// "
                        "checkpoints (MinIO, moto, Ceph). The connection's endpoint_url wins.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "http://minio:9000",
                        "default": "",
                    },
                    "checkpoint_interval": {
                        "description": "Seconds between two periodic checkpoint uploads while a task runs.",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "60",
                        "default": "60",
                    },
                    "checkpoint_max_bytes": {
                        "description": "Largest checkpoint a task may upload ('10Gi', or bytes). "
                        "A bigger one fails the task without retries. Empty: no limit.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "20Gi",
                        "default": "",
                    },
                    "checkpoint_local_dir": {
                        "description": "Directory on the worker under which the Docker and local "
                        "runtimes keep the working copy of each task's checkpoint (bind-mounted "
                        "into Docker containers, so the Docker engine must see this filesystem).",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "/var/lib/airflow-mlops/checkpoints",
                        "default": "/tmp/airflow-mlops-checkpoints",
                    },
                    "checkpoint_sync_image": {
                        "description": "Image of the Kubernetes init container and sidecar that "
                        "restore and upload checkpoints. It needs python3 and boto3, not this "
                        "package.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "registry.example.com/mlops-checkpoint-sync:1",
                        "default": "",
                    },
                    "plugin_freshness_threshold": {
                        "description": "The MLOps plugin's Features view marks a feature view "
                        "stale when its last materialized window ended longer ago than this "
                        "('90m', '2h', '1d'). A view's own tag mlops.freshness_threshold wins; "
                        "empty: the view's TTL, and without a TTL no mark.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "2h",
                        "default": "",
                    },
                    "plugin_backend_timeout": {
                        "description": "Seconds the MLOps plugin's pages wait for one backend "
                        "(MLflow, Feast, the Docker engine, Kubernetes) before they show it as "
                        "unreachable.",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "5",
                        "default": "5",
                    },
                    "plugin_warm_imports": {
                        "description": "After the first request to an MLOps page, import mlflow "
                        "and feast in a background thread of the api-server (when connections of "
                        "those types exist), so the Models and Features pages do not wait seconds "
                        "for the import on first open.",
                        "version_added": "0.2.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                },
            }
        },
    }
