"""Helpers for the sweep integration tests: run a sweep DAG through `airflow dags test`, read its report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import dags_test

SWEEP_DAGS = Path(__file__).parent / "dags"
_FINISHED = re.compile(r"DagRun Finished: dag_id=(\S+), .*?state=(\w+)")


class SweepRun:
    """The outcome of one real DAG run: its final state, its output and the report it wrote."""

    def __init__(self, dag_id: str, proc: Any, result_dir: Path) -> None:
        self.output = proc.stdout + proc.stderr
        states = [state for d, state in _FINISHED.findall(self.output) if d == dag_id]
        self.state = states[-1] if states else None
        path = result_dir / f"{dag_id}.json"
        self.report = json.loads(path.read_text()) if path.exists() else None

    def tail(self) -> str:
        return self.output[-4000:]


@pytest.fixture
def run_sweep(airflow_db, tmp_path):
    """Return ``run(dag_id, conf=None, **env)`` -> :class:`SweepRun`, a real `airflow dags test` run."""

    def run(dag_id: str, conf: dict[str, Any] | None = None, **env: str) -> SweepRun:
        result_dir = tmp_path / f"result-{dag_id}-{len(list(tmp_path.iterdir()))}"
        result_dir.mkdir()
        proc = dags_test(
            dag_id,
            SWEEP_DAGS,
            conf=json.dumps(conf) if conf else None,
            extra_env={"SWEEP_RESULT_DIR": str(result_dir), **env},
            check=False,
        )
        return SweepRun(dag_id, proc, result_dir)

    return run
