"""Sweep trials resume from their checkpoint: in the next rung of halving, and on a retry.

Real ``airflow dags test`` runs of ``sweep_dags/checkpoint_sweeps.py`` (Python trials; container
trials on the Docker engine), checkpointing to a real S3 API (moto) through an Airflow ``aws``
connection, and to a local path (the killed-and-retried Python trial). The selection deletes
the losers' checkpoints and keeps the best's.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import dags_test

pytestmark = [pytest.mark.integration]

DAGS = Path(__file__).parent / "sweep_dags"


def _run(
    dag_id: str, moto_s3, tmp_path: Path, bucket: str
) -> tuple[dict, dict[str, list[tuple[int, int]]], list[str], str]:
    moto_s3.make_bucket(bucket)
    env = {
        **moto_s3.aws_conn_uri_env("ckpt_s3"),
        "CKPT_URI": f"s3://{bucket}/sweeps",
        "CKPT_LOCAL_URI": f"file://{tmp_path / 'store'}",
        "SWEEP_RESULT_DIR": str(tmp_path),
        "AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR": str(tmp_path / "work"),
    }
    proc = dags_test(dag_id, DAGS, extra_env=env, check=False)
    report = tmp_path / f"{dag_id}.json"
    assert report.exists(), proc.stdout[-5000:] + proc.stderr[-5000:]
    result = json.loads(report.read_text())
    counts = {
        path.stem: [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines()]
        for path in (tmp_path / "counts").glob("*.txt")
    }
    listed = moto_s3.client().list_objects_v2(Bucket=bucket, Prefix="sweeps/").get("Contents") or []
    assert SECRET_NOT_IN(proc.stdout + proc.stderr)
    return result, counts, [o["Key"] for o in listed], proc.stdout + proc.stderr


def SECRET_NOT_IN(text: str) -> bool:
    from tests.support.moto_server import SECRET_KEY

    return SECRET_KEY not in text


def _check(result, counts, keys, *, dag_id: str, budgets: list[int], n: int) -> None:
    summary = result["summary"]
    assert len(counts) == n  # every first-rung trial ran
    by_rungs = {}
    for trial_id, rows in counts.items():
        reached = [budget for budget, _ in rows]
        assert reached == budgets[: len(rows)], (trial_id, rows)
        # Resumed: each rung executes only the steps the previous rung did not, so a trial runs
        # exactly its last budget's steps in total (without a checkpoint: the sum of its budgets).
        executed = [steps for _, steps in rows]
        assert executed == [budgets[0], *(b - a for a, b in zip(budgets, budgets[1:]))][: len(rows)], (
            trial_id,
            rows,
        )
        assert sum(executed) == reached[-1]
        by_rungs.setdefault(len(rows), []).append(trial_id)
    assert len(by_rungs[len(budgets)]) == 1  # one trial reached the last rung
    best = summary["best"]["trial_id"]
    assert by_rungs[len(budgets)] == [best]
    # delete_checkpoints="losers": only the best trial's checkpoint is left.
    run = quote(result["run_id"], safe="")
    prefix = f"sweeps/{dag_id}/{run}/trials/"
    left = {key[len(prefix) :].split("/", 1)[0] for key in keys if key.startswith(prefix)}
    assert left == {quote(best, safe="")}, keys
    assert any(key.endswith("/manifest.json") for key in keys)


@pytest.fixture(scope="module")
def python_run(moto_s3, airflow_db, tmp_path_factory):
    """One run of ``ckpt_halving_python``: the halving sweep and the killed trial, side by side."""
    tmp_path = tmp_path_factory.mktemp("python_run")
    return (*_run("ckpt_halving_python", moto_s3, tmp_path, "sweep-python"), tmp_path)


def test_python_halving_sweep_resumes_each_promoted_trial(python_run):
    result, counts, keys, _, _ = python_run
    _check(result, counts, keys, dag_id="ckpt_halving_python", budgets=[1, 3], n=3)


def test_killed_python_trial_resumes_on_retry_from_a_local_path(python_run):
    """execution_timeout kills the trial after step 10 of 30; the retry restores step 10 and finishes."""
    _, _, _, output, tmp_path = python_run
    executed = [
        tuple(int(v) for v in line.split()) for line in (tmp_path / "retry.txt").read_text().splitlines()
    ]
    # The first try ran steps 1..10 (then hung until the timeout); the retry ran 11..30 only.
    assert executed == [(1, step) for step in range(1, 11)] + [(2, step) for step in range(11, 31)]
    retry = json.loads((tmp_path / "retry.json").read_text())
    [record] = retry["summary"]["records"]
    value = 1
    for step in range(1, 31):
        value = (value * 31 + step * step + 7) % 1_000_003
    assert record["status"] == "success"
    assert record["metrics"]["value"] == value  # = an uninterrupted run's
    assert "AirflowTaskTimeout" in output
    run = quote(retry["run_id"], safe="")
    location = f"file://{tmp_path / 'store'}/ckpt_halving_python/{run}/trials/t-retry"
    assert f"Restored checkpoint from {location}: generation" in output
    assert "step 10, written" in output  # the restore names the step it resumed from
    # Kept (checkpoint_retention="keep") at <uri>/<dag>/<run>/trials/<trial_id>/ ...
    manifest = json.loads(
        (
            tmp_path / "store" / "ckpt_halving_python" / run / "trials" / "t-retry" / "manifest.json"
        ).read_text()
    )
    assert manifest["meta"]["step"] == 30
    # ... and no trial leaves its working copy on the worker.
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.docker
def test_container_halving_sweep_resumes_each_promoted_trial(moto_s3, airflow_db, base_image, tmp_path):
    result, counts, keys, _ = _run("ckpt_halving_docker", moto_s3, tmp_path, "sweep-docker")
    _check(result, counts, keys, dag_id="ckpt_halving_docker", budgets=[1, 2], n=2)
