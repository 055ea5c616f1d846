"""The smoke set: one real DAG run per integration, through the package's public API only.

``make test-matrix`` runs it (with ``tests/unit``) in the floor and latest environments; ``make
test`` runs it in the locked one. Each test copies one DAG of ``dags/`` into its own DAGs folder
and runs it with ``airflow dags test`` against real components.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import dags_test

DAGS = Path(__file__).parent / "dags"


def run_smoke_dag(
    dag_id: str,
    tmp_path: Path,
    *,
    conf: dict[str, Any] | None = None,
    logical_date: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Run ``dags/<dag_id>.py`` with ``airflow dags test``; return its output, failing on a failed run."""
    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    shutil.copy(DAGS / f"{dag_id}.py", folder / f"{dag_id}.py")
    proc = dags_test(
        dag_id,
        folder,
        conf=json.dumps(conf) if conf is not None else None,
        logical_date=logical_date,
        extra_env=extra_env,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    (tmp_path / f"{dag_id}.log").write_text(output)
    assert proc.returncode == 0, f"airflow dags test {dag_id} exited {proc.returncode}:\n{output[-6000:]}"
    assert "state=success" in output, f"{dag_id} did not end in success:\n{output[-6000:]}"
    return output
