"""Issue 14's end-to-end check: a container sweep on Docker, tracked and cached in a real MLflow.

Six container trials through ``airflow dags test`` (two fail on purpose: one exits 1, one writes a
malformed result) with ``cache_key="data-v1"``; then a second DAG run with the same key (every
trial served from MLflow, no container started, no trial run created), then one with another
key (everything runs again). ``airflow dags test`` makes a new DAG run each time; rerunning the
*same* DAG run (a clear, default key ``{{ run_id }}``) is checked under a real scheduler in
``test_scheduled_container_sweep.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import dags_test
from tests.support.docker_events import created_containers
from tests.support.mlflow_server import start_mlflow_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.mlflow_server import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DAG_ID = "tracked_container_sweep"
DAGS = Path(__file__).parent / "tracked_dags"
LOGICAL_DATE = "2025-03-03T00:00:00+00:00"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(tmp_path_factory.mktemp("tracked-sweep-mlflow"), timeout=300)
    yield started
    started.stop()


def _containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=airflow-mlops.dag_id={DAG_ID}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def _created_containers(since: float, until: float) -> list[str]:
    return created_containers(since, until, **{"airflow-mlops.dag_id": DAG_ID})


def _run(server: MlflowServer, tmp_path: Path, conf: dict[str, Any] | None = None) -> tuple[dict, str]:
    result_dir = tmp_path / f"result-{time.time_ns()}"
    result_dir.mkdir()
    conn = json.dumps({"conn_type": "mlflow", "host": server.url})
    proc = dags_test(
        DAG_ID,
        DAGS,
        conf=json.dumps(conf) if conf else None,
        logical_date=LOGICAL_DATE,
        extra_env={"SWEEP_RESULT_DIR": str(result_dir), "AIRFLOW_CONN_MLFLOW_DEFAULT": conn},
        check=False,
    )
    output = proc.stdout + proc.stderr
    path = result_dir / f"{DAG_ID}.json"
    assert proc.returncode == 0, output[-6000:]
    assert path.exists(), output[-6000:]
    return json.loads(path.read_text()), output


def _runs(server: MlflowServer) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(DAG_ID)
    assert experiment is not None, "the sweep made no experiment named after its dag_id"
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _unnamed(error: str | None) -> str | None:
    """The error without the container's name (it names the DAG run, which differs between runs)."""
    return None if error is None else re.sub(r"Container \S+", "Container", error)


def _board(summary: dict) -> list[tuple]:
    return [
        (
            r["rank"],
            r["trial_id"],
            r["hparams"]["x"],
            r["status"],
            (r.get("metrics") or {}).get("loss"),
            _unnamed(r.get("error")),
        )
        for r in summary["leaderboard"]
    ]


def test_container_sweep_is_tracked_cached_and_rerun_on_a_new_cache_key(
    server, tmp_path, airflow_db, docker_engine
):
    from mlflow import MlflowClient

    summary, output = _run(server, tmp_path, conf={"cache_key": "data-v1"})

    # --- first run: 1 parent + 6 children, 2 of them FAILED; 4 successes ranked; no container left
    runs = _runs(server)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    parent = parents[0]
    assert len(children) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.status for r in children) == ["FAILED"] * 2 + ["FINISHED"] * 4
    for child in children:
        tags = child.data.tags
        assert tags["airflow.dag_id"] == DAG_ID
        assert tags["airflow.task_id"] == "train"
        assert tags["airflow.map_index"] in {"0", "1", "2"}
        assert tags["airflow.run_id"].startswith("manual__")
        assert tags["mlops.trial_id"]
        assert child.data.params["x"] in {str(x) for x in range(1, 7)}
        if child.info.status == "FINISHED":
            assert child.data.metrics["loss"] == 1.5 * int(child.data.params["x"])
    assert [x for _, _, x, _, _, _ in _board(summary)[:4]] == [1, 2, 3, 4]
    assert [rank for rank, *_ in _board(summary)] == [1, 2, 3, 4, None, None]
    failed = {r["hparams"]["x"]: r for r in summary["leaderboard"] if r["status"] == "failed"}
    assert set(failed) == {5, 6}
    assert "exit" in failed[5]["error"].lower()
    assert "1" in failed[5]["error"]
    assert any("diverged: loss is nan" in line for line in failed[5]["tail"]), failed[5]
    assert "return.json" in failed[6]["error"] or "JSON" in failed[6]["error"], failed[6]
    assert summary["best"]["hparams"] == {"x": 1}
    assert summary["n_cached"] == 0
    client = MlflowClient(server.url)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_loss"] == 1.5
    local = client.download_artifacts(parent.info.run_id, "leaderboard.json", str(tmp_path))
    board = json.loads(open(local).read())
    rows = board if isinstance(board, list) else board["leaderboard"]
    assert [row["trial_id"] for row in rows] == [r["trial_id"] for r in summary["leaderboard"]]
    csv_path = client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path))
    assert len(open(csv_path).read().strip().splitlines()) == 7  # header + 6 trials
    assert _containers() == []
    assert "trials done" in output
    assert "best so far loss=" in output

    # --- a second DAG run on the same key: all 6 cached, no trial run, no container, same leaderboard
    since = time.time()
    again, output = _run(server, tmp_path, conf={"cache_key": "data-v1"})
    created = _created_containers(since, time.time())
    planned = [line for line in output.splitlines() if "Planned" in line or "cache" in line.lower()]
    assert created == [], f"a fully cached rerun started containers {created}: {planned[-20:]}"
    runs = _runs(server)
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 6
    assert len(runs) == 8  # the second DAG run's own parent run
    assert again["n_cached"] == 6
    assert all(r["cached"] for r in again["leaderboard"])
    assert _board(again) == _board(summary)
    assert [r.get("metrics") for r in again["leaderboard"]] == [
        r.get("metrics") for r in summary["leaderboard"]
    ]
    assert "6 cached" in output

    # --- another cache key: every trial runs again, as new child runs of the same parent
    since = time.time()
    third, _ = _run(server, tmp_path, conf={"cache_key": "data-v2"})
    assert third["n_cached"] == 0
    assert len(_created_containers(since, time.time())) == 6
    runs = _runs(server)
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 12
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 3
    assert _board(third) == _board(summary)
    assert _containers() == []
