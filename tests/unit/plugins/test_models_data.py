"""The Models view's data shaping: promotion tags, the registering task instance, Airflow links."""

from __future__ import annotations

import pytest

from airflow_mlops_provider.plugins.models_data import airflow_links, promotion_of, registered_by, tag_dict


def test_tag_dict_reads_mlflow_json_tags_and_mappings():
    assert tag_dict([{"key": "a", "value": "1"}, {"key": "b"}]) == {"a": "1", "b": ""}
    assert tag_dict({"a": 1}) == {"a": "1"}
    assert tag_dict(None) == {}


def test_promotion_of_reads_the_promote_operators_tags():
    tags = {
        "airflow.promotion.decision": "keep",
        "airflow.promotion.metric": "val_auc",
        "airflow.promotion.mode": "max",
        "airflow.promotion.alias": "champion",
        "airflow.promotion.min_delta": "0.01",
        "airflow.promotion.challenger_value": "0.78",
        "airflow.promotion.champion_value": "0.85",
        "airflow.promotion.champion_version": "2",
        "airflow.promotion.delta": "-0.06999999999999995",
        "team": "ml",
    }
    found = promotion_of(tags)
    assert found is not None
    assert (found["decision"], found["metric"], found["mode"], found["alias"]) == (
        "keep",
        "val_auc",
        "max",
        "champion",
    )
    assert found["champion_version"] == "2"
    assert found["challenger_value"] == 0.78
    assert found["champion_value"] == 0.85
    assert found["delta"] == pytest.approx(-0.07)
    assert found["min_delta"] == 0.01
    assert "team" not in found


def test_promotion_without_a_champion_has_no_delta_and_no_tags_is_none():
    first = promotion_of(
        {
            "airflow.promotion.decision": "promote",
            "airflow.promotion.champion_value": "",
            "airflow.promotion.delta": "",
        }
    )
    assert first is not None
    assert (first["champion_value"], first["delta"], first["champion_version"]) == (None, None, "")
    assert promotion_of({"airflow.promotion.delta": "0.1"}) is None
    assert (
        promotion_of({"airflow.promotion.decision": "keep", "airflow.promotion.delta": "n/a"})["delta"]
        is None
    )


def test_registered_by_links_the_dag_run_and_task_instance():
    tags = {
        "airflow.dag_id": "train",
        "airflow.run_id": "manual__2026-01-01T00:00:00+00:00",
        "airflow.task_id": "register",
        "airflow.map_index": "-1",
    }
    found = registered_by(tags)
    assert found is not None
    assert found["links"] == {
        "dag": "/dags/train",
        "run": "/dags/train/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00",
        "task": "/dags/train/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/register",
    }
    mapped = registered_by({**tags, "airflow.map_index": "3"})
    assert mapped is not None
    assert mapped["links"]["task"].endswith("/tasks/register/mapped/3")
    assert registered_by({"team": "ml"}) is None


def test_airflow_links_quote_every_part():
    links = airflow_links('"><svg onload=alert(1)>', "a/b", "t?x", "x")
    assert links == {
        "dag": "/dags/%22%3E%3Csvg%20onload%3Dalert%281%29%3E",
        "run": "/dags/%22%3E%3Csvg%20onload%3Dalert%281%29%3E/runs/a%2Fb",
        "task": "/dags/%22%3E%3Csvg%20onload%3Dalert%281%29%3E/runs/a%2Fb/tasks/t%3Fx",
    }
    assert airflow_links("d") == {"dag": "/dags/d"}
