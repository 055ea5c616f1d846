"""The ``mlflow-model://`` URI handler in real DAG runs: stored without a trailing slash, refs resolve.

Airflow applies the handler the provider registers under ``asset-uris``: the producer's event is
stored on ``mlflow-model://<name>`` exactly, so a DAG scheduled on ``Asset.ref(uri=...)`` with
that URI is queued by the event (without the handler, Airflow stores ``.../`` and the reference
never matches), and a URI that names no model fails the DAG file at parse time.
"""

from __future__ import annotations

import re
import sqlite3
import textwrap
import uuid
from pathlib import Path

import pytest

from airflow_mlops_provider.assets.mlflow import mlflow_model_uri
from tests.conftest import dags_test

pytestmark = pytest.mark.integration

_PRODUCER = """
from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

from airflow_mlops_provider.assets.mlflow import mlflow_model_asset

START = pendulum.datetime(2025, 1, 1, tz="UTC")


@dag(dag_id="{prefix}_producer", schedule=None, start_date=START, catchup=False)
def producer():
    @task(outlets=[mlflow_model_asset({name!r})])
    def register():
        return "registered"

    @task(outlets=[Asset(uri={uri!r})])  # written by hand, the way mlflow_model_uri writes it
    def promote():
        return "promoted"

    register() >> promote()


@dag(dag_id="{prefix}_consumer", schedule=[Asset.ref(uri={uri!r})], start_date=START, catchup=False)
def consumer():
    @task
    def deploy():
        return "deployed"

    deploy()


producer()
consumer()
"""

_BAD = """
from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task


@dag(dag_id="{prefix}_bad", schedule=[Asset("mlflow-model://team/churn")], start_date=pendulum.datetime(2025, 1, 1))
def bad():
    @task
    def noop():
        return None

    noop()


bad()
"""


def test_model_events_are_stored_on_the_uri_as_written_and_uri_refs_resolve(airflow_db, dags_folder):
    prefix = f"asset_uri_{uuid.uuid4().hex[:8]}"
    name = f"team/{prefix} model"
    uri = mlflow_model_uri(name)
    assert uri == f"mlflow-model://team%2F{prefix}%20model"
    (dags_folder / "producer.py").write_text(
        textwrap.dedent(_PRODUCER.format(prefix=prefix, name=name, uri=uri))
    )

    proc = dags_test(
        f"{prefix}_producer",
        dags_folder,
        extra_env={"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(rf"DagRun Finished: dag_id={prefix}_producer, .*state=success", out), out[-6000:]

    db = sqlite3.connect(Path(airflow_db) / "airflow.db")
    assets = db.execute("SELECT id, name, uri FROM asset WHERE name LIKE ?", (f"%{prefix}%",)).fetchall()
    assert [(n, u) for _, n, u in assets] == [(uri, uri)]  # one Asset, no trailing "/"
    events = db.execute(
        "SELECT source_task_id FROM asset_event WHERE asset_id = ? ORDER BY id", (assets[0][0],)
    ).fetchall()
    assert events == [("register",), ("promote",)]
    queued = db.execute(
        "SELECT target_dag_id FROM asset_dag_run_queue WHERE target_dag_id = ?", (f"{prefix}_consumer",)
    ).fetchall()
    assert queued == [(f"{prefix}_consumer",)], "the URI reference did not match the stored URI"


def test_a_uri_that_names_no_model_fails_the_dag_file(airflow_db, dags_folder):
    prefix = f"asset_uri_{uuid.uuid4().hex[:8]}"
    (dags_folder / "bad.py").write_text(textwrap.dedent(_BAD.format(prefix=prefix)))
    proc = dags_test(f"{prefix}_bad", dags_folder, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "ValueError: An mlflow-model Asset URI must be mlflow-model://<percent-encoded registered model "
        "name>, as mlflow_model_uri(name) builds it; got 'mlflow-model://team/churn', which has a path "
        "(write a '/' in the model name as %2F)"
    ) in out, out[-6000:]
