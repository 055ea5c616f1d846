"""The README's two adaptive-sweep DAGs, copied out of the README and run for real (`airflow dags test`).

The conf shrinks them (fewer, smaller rounds; fewer first-rung trials) to keep the test short;
the DAG files are the README's text, byte for byte. The real scikit-learn models train.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, dags_test

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

SECTION = re.compile(r"^### Adaptive sweeps.*?(?=^\*\*Figures)", re.S | re.M)
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def readme_blocks() -> list[str]:
    section = SECTION.search((REPO_ROOT / "README.md").read_text())
    assert section, "README lost its 'Adaptive sweeps' section"
    blocks = BLOCK.findall(section.group(0))
    assert len(blocks) == 2, (
        f"expected the TPE and the halving DAG in the README section, found {len(blocks)}"
    )
    return blocks


def select_result(home: Path, dag_id: str) -> dict:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'select_best' AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
    assert row is not None, f"no select_best result for {dag_id}"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def readme_dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    tpe, halving = readme_blocks()
    (folder / "readme_tpe.py").write_text(tpe)
    (folder / "readme_halving.py").write_text(halving)
    return folder


def test_readme_tpe_dag_runs_its_rounds(airflow_db, readme_dags):
    conf = {"rounds": 2, "trials_per_round": 3}
    proc = dags_test("tpe_sweep", readme_dags, conf=json.dumps(conf), check=False)
    out = proc.stdout + proc.stderr
    assert "state=success" in out, out[-4000:]
    result = select_result(airflow_db, "tpe_sweep")
    board = result["leaderboard"]
    assert result["kind"] == "rounds"
    assert len(board) == 6
    assert sorted(r["round"] for r in board) == [0, 0, 0, 1, 1, 1]
    assert all(r["status"] == "success" and 0 <= r["metrics"]["error"] < 0.5 for r in board)
    assert result["best"]["metrics"]["error"] == min(r["metrics"]["error"] for r in board)
    # the third round built into the DAG planned nothing: this run asked for 2
    assert "Round 3 of the 4 built: skipped, this run asked for 2" in out


def test_readme_halving_dag_promotes_to_the_full_budget(airflow_db, readme_dags):
    proc = dags_test("halving_sweep_dag", readme_dags, conf=json.dumps({"n_trials": 9}), check=False)
    out = proc.stdout + proc.stderr
    assert "state=success" in out, out[-4000:]
    result = select_result(airflow_db, "halving_sweep_dag")
    board = result["leaderboard"]
    assert result["kind"] == "rungs"
    # 9 trials x 1 epoch, 3 x 3, 1 x 9, 1 x 27
    assert sorted((r["rung"], r["budget"]) for r in board) == [(0, 1)] * 6 + [(1, 3)] * 2 + [(3, 27)]
    best = result["best"]
    assert (best["rung"], best["budget"]) == (3, 27)
    assert [step["budget"] for step in best["rungs"]] == [1, 3, 9, 27]
    assert result["budget_spent"] == 9 * 1 + 3 * 3 + 1 * 9 + 1 * 27
