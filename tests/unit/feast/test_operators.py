"""Argument validation, window resolution and mapping helpers of the Feast operators."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import AssetAlias
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.operators.feast import (
    DEFAULT_ASSET_ALIAS,
    FeastApplyOperator,
    FeastMaterializeIncrementalOperator,
    FeastMaterializeOperator,
    backfill_chunks,
    per_feature_view,
    resolve_window,
)

UTC = timezone.utc
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
DAY1 = datetime(2025, 5, 1, tzinfo=UTC)
DAY2 = datetime(2025, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"feature_views": "fv_0"},
            "feature_views must be a non-empty list of feature view names, got 'fv_0'",
        ),
        ({"feature_views": []}, "feature_views must be a non-empty list of feature view names, got []"),
        ({"feature_views": ["fv_0", ""]}, "feature_views must hold non-empty strings, got ['fv_0', '']"),
        (
            {"start_date": datetime(2025, 5, 1)},
            "start_date must be timezone-aware (e.g. end with +00:00), got datetime.datetime(2025, 5, 1, 0, 0)",
        ),
        (
            {"end_date": "2025-05-02T00:00:00"},
            "end_date must be timezone-aware (e.g. end with +00:00), got '2025-05-02T00:00:00'",
        ),
        ({"end_date": "yesterday"}, "end_date must be an ISO 8601 datetime, got 'yesterday'"),
        ({"online_write_batch_size": 0}, "online_write_batch_size must be a positive integer or None, got 0"),
        (
            {"online_write_batch_size": "10"},
            "online_write_batch_size must be a positive integer or None, got '10'",
        ),
        ({"newer_wins": "yes"}, "newer_wins must be True or False, got 'yes'"),
    ],
    ids=[
        "views-str",
        "views-empty",
        "views-blank",
        "start-naive",
        "end-naive-str",
        "end-garbage",
        "batch-zero",
        "batch-str",
        "newer-wins-str",
    ],
)
def test_materialize_rejects_bad_arguments_at_parse_time(kwargs, message):
    with pytest.raises(ValueError) as err:
        FeastMaterializeOperator(task_id="m", **kwargs)
    assert str(err.value) == message


def test_apply_rejects_non_bool_allow_deletes():
    with pytest.raises(ValueError, match=r"^allow_deletes must be True or False, got 'yes'$"):
        FeastApplyOperator(task_id="a", allow_deletes="yes")


def test_templates_are_accepted_at_parse_time_and_fields_declared():
    op = FeastMaterializeOperator(
        task_id="m",
        feature_views="{{ params.views }}",
        start_date="{{ data_interval_start }}",
        end_date="{{ params.end }}",
    )
    assert op.template_fields == ("feature_views", "window_start", "window_end", "feast_conn_id")
    assert op.window_start == "{{ data_interval_start }}"
    assert AssetAlias(name=DEFAULT_ASSET_ALIAS) in op.outlets


def test_default_args_start_date_is_the_task_start_not_the_window():
    from airflow.sdk import DAG

    start = datetime(2024, 1, 1, tzinfo=UTC)
    with DAG("d", schedule=None, default_args={"start_date": start}):
        op = FeastMaterializeOperator(task_id="m")
        inc = FeastMaterializeIncrementalOperator(task_id="i")
    assert op.window_start is None
    assert op.start_date == start
    assert inc.window_start is None
    assert inc.window_end is None


@pytest.mark.parametrize(
    ("start", "end", "context", "message"),
    [
        (
            datetime(2025, 5, 1),
            DAY2,
            {},
            "start_date must be timezone-aware (e.g. end with +00:00), got datetime.datetime(2025, 5, 1, 0, 0)",
        ),
        (
            DAY1,
            "2025-05-02T00:00:00",
            {},
            "end_date must be timezone-aware (e.g. end with +00:00), got '2025-05-02T00:00:00'",
        ),
        (
            DAY2,
            DAY1,
            {},
            "start_date must be before end_date, got start_date=2025-05-02T00:00:00+00:00 and end_date=2025-05-01T00:00:00+00:00",
        ),
        (
            DAY1,
            DAY1,
            {},
            "start_date must be before end_date, got start_date=2025-05-01T00:00:00+00:00 and end_date=2025-05-01T00:00:00+00:00",
        ),
        (
            DAY1,
            datetime(2025, 6, 2, tzinfo=UTC),
            {},
            "end_date 2025-06-02T00:00:00+00:00 is in the future (now 2025-06-01T12:00:00+00:00): Feast would record it as materialized and later incremental runs would skip the rows in between",
        ),
        (
            DAY1,
            None,
            {"data_interval_end": None},
            "end_date is not set and the DAG run has no data interval: pass end_date explicitly",
        ),
    ],
    ids=["naive-start", "naive-end", "start-after-end", "start-equals-end", "future-end", "no-interval"],
)
def test_resolve_window_rejects_bad_windows(start, end, context, message):
    with pytest.raises(AirflowFailException) as err:
        resolve_window(start, end, context, now=NOW)
    assert str(err.value) == message


def test_resolve_window_defaults_to_data_interval_end_and_parses_iso():
    assert resolve_window("2025-05-01T02:00:00+02:00", None, {"data_interval_end": DAY2}, now=NOW) == (
        datetime(2025, 5, 1, tzinfo=UTC),
        DAY2,
    )
    assert resolve_window(None, DAY2, {}, now=NOW) == (None, DAY2)


def test_execute_uses_the_data_interval_start():
    op = FeastMaterializeOperator(task_id="m")
    assert op._window({"data_interval_start": DAY1, "data_interval_end": DAY2}) == (DAY1, DAY2)
    with pytest.raises(
        AirflowFailException, match="start_date is not set and the DAG run has no data interval"
    ):
        op._window({"data_interval_start": None, "data_interval_end": DAY2})
    inc = FeastMaterializeIncrementalOperator(task_id="i")
    assert inc._window({"data_interval_start": DAY1, "data_interval_end": DAY2}) == (None, DAY2)


def test_per_feature_view():
    assert per_feature_view(["a", "b"]) == [["a"], ["b"]]
    assert per_feature_view(["a", "b", "c", "d", "e"], groups=2) == [["a", "c", "e"], ["b", "d"]]
    assert per_feature_view(["a"], groups=3) == [["a"]]
    with pytest.raises(ValueError, match=r"^groups must be a positive integer or None, got 0$"):
        per_feature_view(["a"], groups=0)
    with pytest.raises(
        ValueError, match=r"^feature_views must be a non-empty list of feature view names, got 'ab'$"
    ):
        per_feature_view("ab")


def test_backfill_chunks_cover_the_window_contiguously():
    chunks = backfill_chunks(DAY1, "2025-05-02T00:00:00+00:00", chunk=timedelta(hours=10))
    assert [(c["start_date"], c["end_date"]) for c in chunks] == [
        ("2025-05-01T00:00:00+00:00", "2025-05-01T10:00:00+00:00"),
        ("2025-05-01T10:00:00+00:00", "2025-05-01T20:00:00+00:00"),
        ("2025-05-01T20:00:00+00:00", "2025-05-02T00:00:00+00:00"),
    ]
    assert all(c["newer_wins"] is True for c in chunks)
    per_view = backfill_chunks(DAY1, DAY2, chunk=timedelta(days=1), feature_views=["a", "b"])
    assert [c["feature_views"] for c in per_view] == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("start", "end", "chunk", "message"),
    [
        (
            DAY2,
            DAY1,
            timedelta(hours=1),
            "start must be before end, got start=datetime.datetime(2025, 5, 2, 0, 0, tzinfo=datetime.timezone.utc) and end=datetime.datetime(2025, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)",
        ),
        (DAY1, DAY2, timedelta(0), "chunk must be a positive timedelta, got datetime.timedelta(0)"),
        (DAY1, DAY2, 3600, "chunk must be a positive timedelta, got 3600"),
        (
            datetime(2025, 5, 1),
            DAY2,
            timedelta(hours=1),
            "start must be timezone-aware (e.g. end with +00:00), got datetime.datetime(2025, 5, 1, 0, 0)",
        ),
    ],
    ids=["reversed", "zero-chunk", "int-chunk", "naive"],
)
def test_backfill_chunks_rejects_bad_input(start, end, chunk, message):
    with pytest.raises(ValueError) as err:
        backfill_chunks(start, end, chunk=chunk)
    assert str(err.value) == message
