"""The Models view hides the registering DAG run of a version whose DAG the user may not read."""

from __future__ import annotations

import pytest

from airflow_mlops_provider.plugins import models_view
from airflow_mlops_provider.plugins.models_data import registered_by
from airflow_mlops_provider.plugins.render import page


def _detail() -> dict:
    def version(number: str, dag_id: str) -> dict:
        tags = {"airflow.dag_id": dag_id, "airflow.run_id": f"run_{number}", "airflow.task_id": "register"}
        return {
            "version": number, "status": "READY", "created": 1_700_000_000_000, "source": "", "run_id": "",
            "run_url": "", "aliases": [], "registered_by": registered_by(tags), "promotion": None,
            "tags": {}, "mlflow_url": "",
        }  # fmt: skip

    return {
        "conn_id": "mlflow_default", "name": "churn", "description": "", "aliases": [],
        "versions": [version("2", "secret_dag"), version("1", "open_dag")], "promotions": [], "page": 1,
        "next_page_token": None, "next_path": "", "first_path": "", "mlflow_url": "", "ui_url": "",
        "error": None,
    }  # fmt: skip


@pytest.fixture
def readable(monkeypatch):
    asked = []

    def can_read(user, dag_id, entity):
        asked.append(dag_id)
        return dag_id == "open_dag"

    monkeypatch.setattr(models_view, "can_read_dag", can_read)
    return asked


def test_unreadable_dag_runs_are_dropped_readable_ones_kept(readable):
    data = models_view.hide_unreadable_dags(object(), _detail())
    hidden, shown = data["versions"]
    assert hidden["registered_by"] == {"hidden": True}
    assert shown["registered_by"]["dag_id"] == "open_dag"
    assert shown["registered_by"]["run_id"] == "run_1"
    assert readable == ["secret_dag", "open_dag"]  # once per DAG id


def test_the_page_says_so_and_names_nothing_of_the_hidden_dag(readable):
    data = models_view.hide_unreadable_dags(object(), _detail())
    html = page("model.html", title="Model churn", active="/mlops/models", model=data).body.decode()
    assert "a DAG you may not read" in html
    assert "secret_dag" not in html
    assert "run_2" not in html
    assert "open_dag" in html
    assert "run_1" in html
