from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT, dags_test

pytestmark = pytest.mark.integration


def test_smoke_dag_runs_through_airflow_dags_test(airflow_db):
    proc = dags_test("mlops_smoke", REPO_ROOT / "dags")
    out = proc.stdout + proc.stderr
    assert "success" in out.lower(), out[-3000:]
