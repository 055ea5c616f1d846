"""Feast apply and materialize of one data interval, in a real DAG run on a real SQLite-backed repo."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.smoke.conftest import run_smoke_dag
from tests.support.feast_repo import FEATURES, create_feature_repo, online_values

pytestmark = [pytest.mark.smoke, pytest.mark.integration]

LOGICAL_DATE = "2024-01-02T00:00:00+00:00"
WINDOW = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))


def test_apply_then_materialize_fills_the_online_store_with_the_latest_rows(airflow_db, tmp_path):
    from feast import FeatureStore

    repo = create_feature_repo(tmp_path / "repo", rows=600, n_views=2, n_entities=40)
    run_smoke_dag(
        "smoke_feast",
        tmp_path,
        logical_date=LOGICAL_DATE,
        extra_env={"AIRFLOW_CONN_FEAST_DEFAULT": repo.connection_json()},
    )
    sample = list(range(1, repo.n_entities + 1))
    got = online_values(FeatureStore(repo_path=str(repo.path)), repo, sample)
    for view in repo.feature_views:
        expected = repo.expected_latest(view, *WINDOW)
        assert expected, f"no rows of {view} in the window"
        for feature in FEATURES:
            assert got[f"{view}:{feature}"] == [
                expected[e][feature] if e in expected else None for e in sample
            ], f"{view}:{feature}"
