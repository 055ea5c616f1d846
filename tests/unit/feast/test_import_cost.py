"""Importing the Feast operators, sensor, trigger, hook and assets must not import feast."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

MODULES = [
    "airflow_mlops_provider.hooks.feast",
    "airflow_mlops_provider.operators.feast",
    "airflow_mlops_provider.sensors.feast",
    "airflow_mlops_provider.triggers.feast",
    "airflow_mlops_provider.assets.feast",
]
HEAVY = ["feast", "pandas", "pyarrow", "numpy", "dask"]

_PROBE = """
import importlib, json, runpy, sys
for name in {modules!r}:
    importlib.import_module(name)
runpy.run_path({dag!r})  # the integration DAG file, as the DAG processor would parse it
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_feast_modules_and_dag_file_do_not_import_feast():
    dag = str(REPO_ROOT / "tests/integration/feast/dags/feast_dags.py")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=MODULES, dag=dag, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
