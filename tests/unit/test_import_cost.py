"""Importing what DAG files import must not pull in heavy libraries (checked in a fresh process)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "feast", "pandas", "pyarrow", "numpy", "docker", "kubernetes", "sklearn")

DAG_FACING_MODULES = [
    "airflow_mlops_provider",
    "airflow_mlops_provider.compute",
    "airflow_mlops_provider.exceptions",
    "airflow_mlops_provider.get_provider_info",
    "airflow_mlops_provider.hooks.mlflow",
    "airflow_mlops_provider.hooks.feast",
    "airflow_mlops_provider.operators.mlflow",
    "airflow_mlops_provider.operators.feast",
    "airflow_mlops_provider.sensors.mlflow",
    "airflow_mlops_provider.sensors.feast",
    "airflow_mlops_provider.triggers.mlflow",
    "airflow_mlops_provider.triggers.feast",
    "airflow_mlops_provider.links.mlflow",
    "airflow_mlops_provider.sweeps",
    "airflow_mlops_provider.params",
    "airflow_mlops_provider.operators.container",
    "airflow_mlops_provider.operators.local",
]

_PROBE = """
import json, sys, importlib
importlib.import_module(sys.argv[1])
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps(heavy))
"""


@pytest.mark.parametrize("module", DAG_FACING_MODULES)
def test_module_does_not_import_heavy_libraries(module):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), module],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert imported == [], f"importing {module} imported heavy modules {imported}"


def test_container_module_with_docker_runtime_leaves_kubernetes_out():
    probe = (
        "import os, sys; os.environ['AIRFLOW__MLOPS__RUNTIME']='docker'\n"
        "from airflow_mlops_provider.operators.container import container_operator\n"
        "container_operator()\n"
        "print('kubernetes' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"


_TIMING = """
import time
import airflow.sdk  # noqa: F401
start = time.perf_counter()
import airflow_mlops_provider.compute  # noqa: F401
print((time.perf_counter() - start) * 1000)
"""


def test_compute_import_cost_over_airflow_sdk(report_figure):
    """Reports (does not assert on) what importing compute adds over ``import airflow.sdk``."""
    samples = []
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-c", _TIMING], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        samples.append(float(proc.stdout.strip().splitlines()[-1]))
    median = statistics.median(samples)
    report_figure(
        f"import airflow_mlops_provider.compute after airflow.sdk: median {median:.1f} ms "
        f"over 5 fresh processes (target <= 50 ms); samples {[round(s, 1) for s in samples]}"
    )
    assert median > 0
