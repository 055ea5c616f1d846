"""Operators, hook and sensor in-process against real Feast stores (SQLite and Redis).

Feast is imported once, in the pytest process; only the concurrency test starts processes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.operators.feast import (
    FeastApplyOperator,
    FeastMaterializeIncrementalOperator,
    FeastMaterializeOperator,
    backfill_chunks,
)
from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor
from airflow_mlops_provider.triggers.feast import FeastFeatureFreshnessTrigger
from tests.integration.feast.conftest import REDIS_PASSWORD
from tests.support.feast_repo import (
    _definitions,
    create_feature_repo,
    online_values,
    sqlite_online_snapshot,
)

pytestmark = pytest.mark.integration
UTC = timezone.utc


class OutletEvents:
    """Stands in for ``context["outlet_events"]``: records what the operator adds."""

    def __init__(self):
        self.added = []

    def __getitem__(self, alias):
        outer = self

        class _Accessor:
            def add(self, asset, extra=None):
                outer.added.append((alias.name, asset.uri, extra))

        return _Accessor()


def _context(start=None, end=None):
    return {"data_interval_start": start, "data_interval_end": end, "outlet_events": OutletEvents()}


def _use(monkeypatch, repo, conn_id="feast_default", password=None):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", repo.connection_json(password=password))
    return conn_id


def _apply(conn_id):
    return FeastApplyOperator(task_id="apply", feast_conn_id=conn_id).execute({})


def test_apply_logs_the_plan_and_refuses_deletions(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=200, n_views=2)
    conn_id = _use(monkeypatch, repo)
    plans = []
    FeastHook(conn_id).apply(log=plans.append)
    assert "  add    feature view fv_1" in plans[0].splitlines()
    again = _apply(conn_id)
    assert again["added"] == []
    assert again["deleted"] == []
    assert FeastHook(conn_id).test_connection() == (
        True,
        "Feast project 'mlops_test': 2 feature view(s): fv_0, fv_1",
    )

    (repo.path / "features.py").write_text(_definitions(["fv_0"], repo.parquet))
    with pytest.raises(AirflowFailException) as err:
        _apply(conn_id)
    assert str(err.value).startswith("Applying the Feast repo would delete: ")
    assert "fv_1" in str(err.value)
    assert str(err.value).endswith("Pass allow_deletes=True to delete them.")
    assert FeastHook(conn_id).list_feature_views() == ["fv_0", "fv_1"]  # nothing changed

    FeastApplyOperator(task_id="apply", feast_conn_id=conn_id, allow_deletes=True).execute({})
    assert FeastHook(conn_id).list_feature_views() == ["fv_0"]


def test_unknown_feature_view_lists_the_known_ones(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=200, n_views=2)
    conn_id = _use(monkeypatch, repo)
    _apply(conn_id)
    op = FeastMaterializeOperator(task_id="m", feast_conn_id=conn_id, feature_views=["fv_0", "nope"])
    with pytest.raises(AirflowFailException) as err:
        op.execute(_context(repo.start, repo.end))
    assert str(err.value) == (
        "Unknown feature view(s) 'nope' in Feast project 'mlops_test'; known feature views: fv_0, fv_1"
    )


def test_bad_yaml_in_the_repo_fails_before_materializing(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=100, n_views=1)
    repo.yaml_path.write_text("project: mlops_test\nprovider: local\nonline_store: {type: nosuchstore\n")
    conn_id = _use(monkeypatch, repo)
    with pytest.raises(AirflowFailException, match="feature_store.yaml is not valid YAML"):
        FeastMaterializeOperator(task_id="m", feast_conn_id=conn_id).execute(_context(repo.start, repo.end))


def test_redis_store_with_password_serves_what_feast_itself_writes(monkeypatch, tmp_path, redis):
    """Ours (operator, password from the connection) vs FeatureStore.materialize (what the CLI runs)."""
    from feast import FeatureStore

    from tests.support.feast_repo import feature_store_yaml

    ours = create_feature_repo(
        tmp_path / "ours",
        project="redis_ours",
        rows=1200,
        n_views=2,
        n_entities=80,
        online_store="redis",
        redis_connection_string=redis.connection_string(with_password=False),
    )
    conn_id = _use(monkeypatch, ours, password=REDIS_PASSWORD)
    _apply(conn_id)
    context = _context(ours.start, ours.end)
    summary = FeastMaterializeOperator(
        task_id="m", feast_conn_id=conn_id, online_write_batch_size=25
    ).execute(context)
    assert set(summary) == {"fv_0", "fv_1"}
    assert summary["fv_0"]["rows"] == len(ours.expected_latest("fv_0")) == 80
    assert summary["fv_0"]["window"] == [ours.start.isoformat(), ours.end.isoformat()]
    assert summary["fv_0"]["seconds"] >= 0
    assert [uri for _, uri, _ in context["outlet_events"].added] == [
        "feast://redis_ours/fv_0",
        "feast://redis_ours/fv_1",
    ]

    # The same data, another project on the same server, materialized by Feast itself.
    theirs = ours.copy_to(tmp_path / "theirs")
    theirs.yaml_path.write_text(
        feature_store_yaml(
            "redis_theirs", online_store="redis", redis_connection_string=redis.connection_string()
        )
    )
    other_conn = _use(monkeypatch, theirs, conn_id="feast_theirs")
    _apply(other_conn)
    store = FeatureStore(repo_path=str(theirs.path))
    store.materialize(ours.start, ours.end)

    entities = list(range(1, 81))
    got = online_values(FeastHook(conn_id).store, ours, entities)
    expected = online_values(store, theirs, entities)
    assert got == expected
    latest = ours.expected_latest("fv_1")
    assert got["fv_1:count"] == [latest[e]["count"] for e in entities]


def test_chunks_in_any_order_equal_one_window_with_newer_wins(monkeypatch, tmp_path):
    source = create_feature_repo(tmp_path / "source", rows=1600, n_views=2, n_entities=40)
    repos = {name: source.copy_to(tmp_path / name) for name in ("single", "chunks", "unguarded")}
    conns = {name: _use(monkeypatch, repo, conn_id=f"feast_{name}") for name, repo in repos.items()}
    for conn in conns.values():
        _apply(conn)
    FeastMaterializeOperator(task_id="single", feast_conn_id=conns["single"]).execute(
        _context(source.start, source.end)
    )
    chunks = backfill_chunks(source.start, source.end, chunk=timedelta(hours=6))
    assert len(chunks) == 8
    for kwargs in reversed(chunks):  # newest first: the worst order for last-write-wins stores
        FeastMaterializeOperator(task_id="chunk", feast_conn_id=conns["chunks"], **kwargs).execute(_context())
        unguarded = {**kwargs, "newer_wins": False}
        FeastMaterializeOperator(task_id="chunk", feast_conn_id=conns["unguarded"], **unguarded).execute(
            _context()
        )
    single = sqlite_online_snapshot(repos["single"])
    assert sqlite_online_snapshot(repos["chunks"]) == single
    # Without the guard SQLite keeps the last write: older rows replace newer ones.
    assert sqlite_online_snapshot(repos["unguarded"]) != single


def test_incremental_starts_where_the_last_run_ended(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=400, n_views=1, n_entities=20)
    conn_id = _use(monkeypatch, repo)
    _apply(conn_id)
    middle = repo.start + timedelta(days=1)
    FeastMaterializeOperator(task_id="m", feast_conn_id=conn_id).execute(_context(repo.start, middle))
    summary = FeastMaterializeIncrementalOperator(task_id="i", feast_conn_id=conn_id).execute(
        _context(middle, repo.end)
    )
    assert summary["fv_0"]["window"] == [middle.isoformat(), repo.end.isoformat()]
    assert FeastHook(conn_id).most_recent_end_time("fv_0") == repo.end


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_freshness_sensor_defers_and_trigger_fires_after_materialization(
    monkeypatch, tmp_path, redis, online_store
):
    repo = create_feature_repo(
        tmp_path / "repo",
        project=f"fresh_{online_store}",
        rows=100,
        n_views=1,
        n_entities=10,
        online_store=online_store,
        redis_connection_string=redis.connection_string(with_password=False),
    )
    conn_id = _use(monkeypatch, repo, password=REDIS_PASSWORD if online_store == "redis" else None)
    _apply(conn_id)
    sensor = FeastFeatureFreshnessSensor(
        task_id="fresh",
        feast_conn_id=conn_id,
        feature_view="fv_0",
        max_staleness=timedelta(hours=1),
        deferrable=True,
        poke_interval=0.2,
        timeout=30,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, FeastFeatureFreshnessTrigger)
    assert deferred.value.method_name == "execute_complete"
    path, kwargs = trigger.serialize()
    trigger = FeastFeatureFreshnessTrigger(**json.loads(json.dumps(kwargs)))

    async def scenario():
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        done, _ = await asyncio.wait({first}, timeout=1.0)
        assert not done, "the trigger fired before the feature view was materialized"
        now = datetime.now(UTC)
        await asyncio.to_thread(
            FeastMaterializeOperator(
                task_id="m",
                feast_conn_id=conn_id,
                start_date=now - timedelta(hours=2),
                end_date=now - timedelta(minutes=1),
            ).execute,
            _context(),
        )
        return await asyncio.wait_for(first, timeout=20)

    event = asyncio.run(scenario())
    assert event.payload["status"] == "success"
    assert "within max_staleness 1:00:00" in event.payload["message"]
    assert sensor.execute_complete({}, event.payload) == event.payload["most_recent_end_time"]
    # Not deferrable: a plain poke now succeeds at once.
    sensor.deferrable = False
    assert sensor.poke({}) is True


def test_trigger_reports_an_unknown_feature_view(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=100, n_views=1)
    conn_id = _use(monkeypatch, repo)
    _apply(conn_id)
    trigger = FeastFeatureFreshnessTrigger(
        feast_conn_id=conn_id, feature_view="nope", max_staleness_seconds=60
    )

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(first_event())
    assert event.payload["status"] == "error"
    assert "known feature views: fv_0" in event.payload["message"]
