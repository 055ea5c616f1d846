"""Freshness trigger serialization and verdicts; feature-view asset URIs."""

from __future__ import annotations

import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from airflow_mlops_provider.assets.feast import feature_view_asset, feature_view_uri, sanitize_uri
from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor
from airflow_mlops_provider.triggers.feast import FeastFeatureFreshnessTrigger, freshness

UTC = timezone.utc


def test_trigger_serialization_round_trip():
    trigger = FeastFeatureFreshnessTrigger(
        feast_conn_id="c", feature_view="fv", max_staleness_seconds=60, poke_interval=5, as_of=None
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_mlops_provider.triggers.feast.FeastFeatureFreshnessTrigger"
    import importlib
    import json

    module, _, name = path.rpartition(".")
    clone = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert clone.serialize() == (path, kwargs)


@pytest.mark.parametrize(
    ("end", "fresh", "fragment"),
    [
        (None, False, "has never been materialized"),
        (datetime(2025, 1, 1, 11, 30, tzinfo=UTC), True, "within max_staleness 1:00:00"),
        (datetime(2025, 1, 1, 10, 0, tzinfo=UTC), False, "beyond max_staleness 1:00:00"),
    ],
    ids=["never", "fresh", "stale"],
)
def test_freshness_verdicts(end, fresh, fragment):
    ok, message = freshness(end, timedelta(hours=1), datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert ok is fresh
    assert fragment in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"feature_view": "", "max_staleness": 60},
            "feature_view must be a non-empty feature view name, got ''",
        ),
        (
            {"feature_view": "fv", "max_staleness": "1h"},
            "max_staleness must be a timedelta or seconds, got '1h'",
        ),
        (
            {"feature_view": "fv", "max_staleness": timedelta(0)},
            "max_staleness must be positive, got datetime.timedelta(0)",
        ),
    ],
    ids=["empty-view", "str-staleness", "zero-staleness"],
)
def test_sensor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        FeastFeatureFreshnessSensor(task_id="s", **kwargs)
    assert str(err.value) == message


def test_sensor_defaults_to_the_configured_deferrable(monkeypatch):
    sensor = FeastFeatureFreshnessSensor(task_id="s", feature_view="fv", max_staleness=60)
    assert sensor.deferrable is False
    assert sensor.max_staleness == timedelta(seconds=60)


def test_asset_uri():
    assert feature_view_uri("proj", "fv_0") == "feast://proj/fv_0"
    asset = feature_view_asset("proj", "fv_0")
    assert asset.uri == asset.name == "feast://proj/fv_0"
    with pytest.raises(
        ValueError, match=r"^feature_view must be a Feast name \(letters, digits, '_', '-', '.'\), got 'a/b'$"
    ):
        feature_view_uri("proj", "a/b")
    with pytest.raises(ValueError, match="must look like feast://<project>/<feature_view>"):
        sanitize_uri(urllib.parse.urlsplit("feast://proj/a/b"))
