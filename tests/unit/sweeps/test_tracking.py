"""SweepTracker without a server: the config, filters, what a run carries, the failure policy, and
a 10,000-trial cache lookup. The real ``mlflow server`` checks are tests/integration/sweeps/test_tracking.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops_provider.hooks.mlflow import MlflowHook, filter_literal
from airflow_mlops_provider.sweeps import tracking_store as store
from airflow_mlops_provider.sweeps.tracking import (
    CACHE_MODES,
    TRACKING_MODES,
    SweepTracker,
    TrackingConfig,
    TrialRun,
)

URI = "http://mlflow.example:5000"
IDENTITY = {"dag_id": "d", "task_id": "plan", "run_id": "manual__1", "map_index": "-1", "try_number": "1"}
_TAG_CLAUSE = re.compile(r"tags\.`([^`]+)` = (['\"])(.*?)\2")


def _run(
    run_id: str, *, status: str = "FINISHED", start: int = 0, tags=None, metrics=None, params=None
) -> Any:
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    info = RunInfo(run_id, "1", "u", status, start, None, "active", f"mlflow-artifacts:/1/{run_id}/artifacts")
    data = RunData(
        metrics=[Metric(k, v, 0, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, v) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    return Run(info, data)


class FakeClient:
    """An in-memory stand-in for the MlflowClient calls the tracker makes."""

    def __init__(
        self, runs=(), *, fail: BaseException | None = None, duplicate_creates: bool = False
    ) -> None:
        self.runs = {r.info.run_id: r for r in runs}
        self.fail = fail
        self.duplicate_creates = duplicate_creates
        self.calls: list[tuple[str, Any]] = []
        self.ids = itertools.count(1000)

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def get_experiment_by_name(self, name):
        from mlflow.entities import Experiment

        self._call("get_experiment_by_name", name)
        return Experiment("1", name, "mlflow-artifacts:/1", "active")

    def search_runs(self, experiment_ids, filter_string="", max_results=1000, order_by=None, page_token=None):
        from mlflow.store.entities.paged_list import PagedList

        self._call("search_runs", filter_string, page_token)
        wanted = {key: value for key, _, value in _TAG_CLAUSE.findall(filter_string)}
        found = [r for r in self.runs.values() if all(r.data.tags.get(k) == v for k, v in wanted.items())]
        start = int(page_token or 0)
        end = start + max_results
        return PagedList(found[start:end], str(end) if end < len(found) else None)

    def create_run(self, experiment_id, tags=None, run_name=None):
        self._call("create_run", tags)
        created = []
        for _ in range(2 if self.duplicate_creates else 1):
            run_id = f"r{next(self.ids)}"
            self.runs[run_id] = _run(run_id, status="RUNNING", start=next(self.ids), tags=tags)
            created.append(self.runs[run_id])
        return created[-1]

    def delete_run(self, run_id):
        self._call("delete_run", run_id)
        del self.runs[run_id]

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._call("log_batch", run_id)
        run = self.runs[run_id]
        for tag in tags:
            run.data._tags[tag.key] = tag.value
        for param in params:
            run.data._params[param.key] = param.value
        for metric in metrics:
            run.data._metrics[metric.key] = metric.value

    def set_terminated(self, run_id, status="FINISHED"):
        self._call("set_terminated", run_id)
        self.runs[run_id].info._status = status

    def update_run(self, run_id, status=None):
        self._call("update_run", run_id)
        self.runs[run_id].info._status = status

    def delete_tag(self, run_id, key):
        self._call("delete_tag", run_id)
        del self.runs[run_id].data._tags[key]

    def get_run(self, run_id):
        self._call("get_run", run_id)
        return self.runs[run_id]


def _config(**kwargs: Any) -> TrackingConfig:
    values: dict[str, Any] = {
        "mlflow_conn_id": "mlflow_default",
        "experiment_name": "exp",
        "cache_key": "k" * 32,
        "cache_key_text": "data-v1",
        "metric": "loss",
        **kwargs,
    }
    return TrackingConfig(**values)


def _tracker(client: FakeClient, **kwargs: Any) -> SweepTracker:
    tracker = SweepTracker(_config(**kwargs))
    hook = MlflowHook(mlflow_conn_id="mlflow_default")
    hook.__dict__["client"] = client
    hook.__dict__["_settings"] = {
        "tracking_uri": URI,
        "registry_uri": URI,
        "login": None,
        "secret": "s3cr3t-token",
        "insecure": False,
        "ui_url": URI,
    }
    tracker.__dict__["hook"] = hook
    return tracker


def _trial_runs(n: int, *, key: str = "k" * 32) -> list[Any]:
    return [
        _run(
            f"c{i}",
            start=i,
            tags={
                store.TRIAL_ID_TAG: f"t{i}",
                store.CACHE_KEY_TAG: key,
                store.TRIAL_STATUS_TAG: "success",
                store.METRIC_KEYS_TAG: json.dumps({"loss": "loss"}),
            },
            metrics={"loss": float(i), store.SECONDS_METRIC: 1.0},
        )
        for i in range(n)
    ]


# -- TrackingConfig ---------------------------------------------------------------------------


def test_modes():
    assert TRACKING_MODES == ("required", "best_effort", "off")
    assert CACHE_MODES == ("off", "read", "readwrite")


def test_config_round_trips_through_a_dict():
    config = _config(experiment_id="3", parent_run_id="p", mode="max", cache="read")
    as_dict = config.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert TrackingConfig.from_dict({**as_dict, "added_later": 1}) == config
    assert TrackingConfig("c", "e").tracking == "required"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mlflow_conn_id": ""}, "mlflow_conn_id must be a non-empty string, got ''"),
        (
            {"tracking": "off"},
            "tracking must be one of ['required', 'best_effort'] in a TrackingConfig (tracking='off' "
            "builds none), got 'off'",
        ),
        ({"cache": "write"}, "cache must be one of ['off', 'read', 'readwrite'], got 'write'"),
        ({"mode": "best"}, "mode must be 'min', 'max' or None, got 'best'"),
    ],
    ids=["conn", "tracking-off", "cache", "mode"],
)
def test_config_refuses(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _config(**kwargs)


# -- filters and searches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "'abc'"), ("it's", '"it\'s"'), ('say "x"', "'say \"x\"'"), ("", "''")],
    ids=["plain", "single-quote", "double-quote", "empty"],
)
def test_filter_literal(value, expected):
    assert filter_literal(value) == expected


@pytest.mark.parametrize("value", ['it\'s "both"', "back\\slash"], ids=["both-quotes", "backslash"])
def test_filter_literal_refuses(value):
    with pytest.raises(ValueError, match=re.escape(f"cannot search MLflow for the value {value!r}")):
        filter_literal(value)


def test_search_runs_by_tags_reads_every_page():
    client = FakeClient(_trial_runs(25))
    hook = MlflowHook()
    hook.__dict__["client"] = client
    runs = hook.search_runs_by_tags(["1"], {store.CACHE_KEY_TAG: "k" * 32}, page_size=10)
    assert [r.info.run_id for r in runs] == [f"c{i}" for i in range(25)]
    assert [args for _, args in client.calls] == [
        (f"tags.`mlops.cache_key` = '{'k' * 32}'", token) for token in (None, "10", "20")
    ]
    with pytest.raises(ValueError, match="cannot search MLflow for the tag key 'a`b': it holds a back quote"):
        hook.search_runs_by_tags(["1"], {"a`b": "x"})


# -- what a run carries -----------------------------------------------------------------------------


def test_param_values_encode_truncate_and_sanitize():
    params, cut = store.param_values(
        {"lr": 0.1, "layers": [64, 32], "name": "a", "skip": None, "bad@key": True, "long": "x" * 7000},
        prefix="",
    )
    assert {k: v for k, v in params.items() if k != "long"} == {
        "lr": "0.1",
        "layers": "[64, 32]",
        "name": "a",
        "bad_key": "true",
    }
    assert len(params["long"]) == store.PARAM_VALUE_LIMIT
    assert params["long"].endswith("...[truncated 7000 chars]")
    assert cut == ["long"]
    assert store.param_values({"gpus": 2}, prefix="resources.") == ({"resources.gpus": "2"}, [])


@pytest.mark.parametrize(
    ("uri", "safe"),
    [
        ("http://bob:pw@host:5000/x", "http://host:5000/x"),
        ("https://token@host", "https://host"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:///tmp/a@b.db", "sqlite:///tmp/a@b.db"),
    ],
    ids=["basic", "token", "plain", "sqlite"],
)
def test_safe_uri(uri, safe):
    assert store.safe_uri(uri) == safe


def test_finish_payload_writes_the_cache_entry_only_for_reusable_outcomes():
    success = {
        "status": "success",
        "metrics": {"loss": 1, "val auc": 0.5},
        "seconds": 2.0,
        "outputs": {"m": 1},
    }
    metrics, tags, outputs, status = store.finish_payload(
        success, cache_key="key", cache_key_text="data-v1", write_cache=True
    )
    assert (metrics, outputs, status) == (
        {"loss": 1.0, "val auc": 0.5, "mlops.seconds": 2.0},
        None,
        "FINISHED",
    )
    assert tags == {
        "mlops.trial_status": "success",
        "mlops.metric_keys": json.dumps({"loss": "loss", "val auc": "val auc"}, sort_keys=True),
        "mlops.outputs": '{"m": 1}',
        "mlops.cache_key": "key",
        "mlops.cache_key_text": "data-v1",
    }
    failed = {"status": "failed", "error": "exit 1", "tail": ["a", "b"], "failure": "trial"}
    _, tags, _, status = store.finish_payload(failed, cache_key="key", cache_key_text=None, write_cache=True)
    assert status == "FAILED"
    assert tags == {
        "mlops.trial_status": "failed",
        "mlops.failure": "trial",
        "mlops.error": "exit 1",
        "mlops.tail": '["a", "b"]',
        "mlops.cache_key": "key",
    }
    infra = {**failed, "failure": "infra"}
    assert (
        "mlops.cache_key"
        not in store.finish_payload(infra, cache_key="k", cache_key_text=None, write_cache=True)[1]
    )
    assert (
        "mlops.cache_key"
        not in store.finish_payload(success, cache_key="k", cache_key_text=None, write_cache=False)[1]
    )
    big = {**success, "outputs": {"paths": ["/m/" + "x" * 50] * 100}}
    _, tags, outputs, _ = store.finish_payload(big, cache_key=None, cache_key_text=None, write_cache=True)
    assert tags["mlops.outputs_artifact"] == "outputs.json"
    assert json.loads(outputs) == big["outputs"]


@pytest.mark.parametrize(
    ("status", "tags", "cache_failures", "expected"),
    [
        (
            "FINISHED",
            {"mlops.trial_status": "success"},
            True,
            {"status": "success", "metrics": {"loss": 0.5}},
        ),
        ("FAILED", {"mlops.failure": "trial", "mlops.error": "oom"}, True, "failed"),
        ("FAILED", {"mlops.failure": "trial"}, False, "run r1 failed and cache_failures is off"),
        ("FAILED", {"mlops.failure": "infra"}, True, "run r1 is FAILED (infra)"),
        ("RUNNING", {}, True, "run r1 is RUNNING (None)"),
        ("KILLED", {"mlops.trial_status": "success"}, True, "run r1 is KILLED (success)"),
    ],
    ids=["success", "trial-failure", "failures-off", "infra", "running", "killed"],
)
def test_outcome_of_run(status, tags, cache_failures, expected):
    run = _run("r1", status=status, tags=tags, metrics={"loss": 0.5})
    outcome, why = store.outcome_of_run(run, metric="loss", cache_failures=cache_failures)
    if isinstance(expected, dict):
        assert (outcome, why) == (expected, None)
    elif expected == "failed":
        assert outcome == {"status": "failed", "error": "oom", "tail": [], "failure": "trial"}
    else:
        assert (outcome, why) == (None, expected)


def test_outcome_lacking_the_metric_is_a_miss():
    run = _run("r1", tags={"mlops.trial_status": "success"}, metrics={"acc": 0.5})
    assert store.outcome_of_run(run, metric="loss", cache_failures=True) == (
        None,
        "run r1 lacks metric 'loss'",
    )


def test_leaderboard_csv_columns_and_rows():
    result = {
        "metric": "loss",
        "leaderboard": [
            {
                "rank": 1,
                "trial_id": "a",
                "status": "success",
                "metrics": {"loss": 0.1},
                "hparams": {"lr": 0.1, "status": "x"},
            },
            {
                "rank": None,
                "trial_id": "b",
                "status": "failed",
                "error": "boom\n  at line 3\n",
                "cached": True,
                "hparams": {"lr": [1, 2]},
            },
        ],
    }
    assert store.leaderboard_csv(result).splitlines() == [
        "rank,trial_id,status,cached,loss,lr,hparam.status,error,mlflow_run_id",
        "1,a,success,False,0.1,0.1,x,,",
        ',b,failed,True,,"[1, 2]",,boom | at line 3,',
    ]
    assert json.loads(store.leaderboard_json(result))["leaderboard"] == result["leaderboard"]


# -- the tracker on a fake client -------------------------------------------------------------------


def test_start_and_trial_run_find_again_what_they_created():
    client = FakeClient()
    tracker = _tracker(client)
    config = tracker.start_sweep(IDENTITY, {"mode": "max", "n_trials": 4, "seed": None})
    assert config is not None
    assert (config.experiment_id, config.mode) == ("1", "max")
    assert tracker.start_sweep(IDENTITY, {"mode": "max"}).parent_run_id == config.parent_run_id
    trial = {"trial_id": "t1", "hparams": {"x": 1}, "resources": {"gpus": 1}}
    first = tracker.trial_run(trial, IDENTITY)
    assert first == TrialRun(first.run_id, "RUNNING", None)
    assert tracker.trial_run(trial, {**IDENTITY, "try_number": "2"}).run_id == first.run_id
    assert client.names().count("create_run") == 2
    assert client.runs[first.run_id].data.params == {"x": "1", "resources.gpus": "1"}
    assert client.runs[first.run_id].data.tags["airflow.try_number"] == "2"


def test_a_create_sent_twice_keeps_one_run():
    client = FakeClient(duplicate_creates=True)
    tracker = _tracker(client)
    tracker.start_sweep(IDENTITY, {})
    run = tracker.trial_run({"trial_id": "t1", "hparams": {}}, IDENTITY)
    children = [r for r in client.runs.values() if r.data.tags.get(store.TRIAL_ID_TAG) == "t1"]
    assert [r.info.run_id for r in children] == [run.run_id]
    assert client.names().count("delete_run") == 2  # the parent's duplicate, then the child's


def test_cached_results_of_10000_trials_is_one_paginated_search():
    runs = _trial_runs(10_000)
    newer_failure = _run(
        "newer",
        status="FAILED",
        start=99_999,
        tags={store.TRIAL_ID_TAG: "t7", store.CACHE_KEY_TAG: "k" * 32, store.FAILURE_TAG: "infra"},
    )
    client = FakeClient([*runs, newer_failure])
    tracker = _tracker(client, experiment_id="1", parent_run_id="p")
    trials = [{"trial_id": f"t{i}", "hparams": {"x": i}} for i in range(10_000)]
    found = tracker.cached_results(trials)
    assert client.names() == ["search_runs"] * 11  # 10,001 runs, 1,000 a page
    assert len(found) == 9_999  # t7's newest run failed around the trial: a miss
    assert found["t42"] == {
        "trial_id": "t42",
        "hparams": {"x": 42},
        "status": "success",
        "metrics": {"loss": 42.0},
        "seconds": 1.0,
        "cached": True,
        "mlflow_run_id": "c42",
    }


@pytest.mark.parametrize("cache", ["off", "read"])
def test_cache_off_reads_nothing_and_read_writes_no_entry(cache):
    client = FakeClient(_trial_runs(3))
    tracker = _tracker(client, experiment_id="1", parent_run_id="p", cache=cache)
    found = tracker.cached_results([{"trial_id": "t1", "hparams": {}}])
    assert (len(found), client.names()) == ((0, []) if cache == "off" else (1, ["search_runs"]))


def test_trial_run_needs_a_started_sweep():
    with pytest.raises(
        AirflowFailException, match=r"the sweep has no MLflow run: call SweepTracker.start_sweep first"
    ):
        _tracker(FakeClient()).trial_run({"trial_id": "t"}, IDENTITY)


def _connection_refused() -> BaseException:
    import requests
    from mlflow.exceptions import MlflowException

    try:
        raise requests.ConnectionError("Connection refused for s3cr3t-token")
    except requests.ConnectionError as err:
        try:
            raise MlflowException(f"API request to {URI}/api/2.0/mlflow/runs/search failed") from err
        except MlflowException as wrapped:
            return wrapped


def test_required_retries_a_server_that_does_not_answer_then_fails_for_a_retry(monkeypatch):
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _: None)
    client = FakeClient(fail=_connection_refused())
    tracker = _tracker(client, experiment_id="1", parent_run_id="p")
    with pytest.raises(AirflowException) as raised:
        tracker.cached_results([{"trial_id": "t1"}])
    assert not isinstance(raised.value, AirflowFailException)
    assert client.names() == ["search_runs"] * 3
    message = str(raised.value)
    assert message.startswith(
        f"MLflow tracking server {URI} did not answer when trying to look up cached trials (3 tries)"
    )
    assert "tracking='best_effort' goes on without MLflow" in message
    assert "s3cr3t-token" not in message


def test_required_fails_without_retry_on_a_refusal():
    from mlflow.exceptions import RestException

    refusal = RestException({"error_code": "PERMISSION_DENIED", "message": "no access"})
    client = FakeClient(fail=refusal)
    with pytest.raises(
        AirflowFailException, match=rf"MLflow at {URI} refused to start the sweep's run: .*no access"
    ):
        _tracker(client).start_sweep(IDENTITY, {})
    assert client.names() == ["get_experiment_by_name"]


def test_best_effort_warns_once_and_stops_calling(caplog):
    client = FakeClient(fail=_connection_refused())
    tracker = _tracker(client, tracking="best_effort", experiment_id="1", parent_run_id="p")
    caplog.set_level(logging.WARNING)
    assert tracker.cached_results([{"trial_id": "t1"}]) == {}
    calls = len(client.calls)
    assert tracker.trial_run({"trial_id": "t1"}, IDENTITY) is None
    assert tracker.finish_trial("r", {"status": "success", "metrics": {"loss": 1}}) is None
    assert tracker.progress() is None
    assert tracker.container_env("r") == {}
    assert len(client.calls) == calls
    assert tracker.enabled is False
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "tracking is off" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "s3cr3t-token" not in caplog.text


def test_the_default_connection_missing_turns_tracking_off(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    caplog.set_level(logging.INFO)
    tracker = SweepTracker(_config())
    assert tracker.start_sweep(IDENTITY, {}) is None
    assert tracker.enabled is False
    assert "MLflow tracking is off: the default connection 'mlflow_default' is not defined" in caplog.text


def test_a_given_connection_missing_fails(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_OTHER", raising=False)
    with pytest.raises(
        AirflowFailException, match=r"mlflow_conn_id 'mlflow_other' is not defined: create an Airflow"
    ):
        SweepTracker(_config(mlflow_conn_id="mlflow_other", tracking="best_effort")).start_sweep(IDENTITY, {})


def test_container_env_holds_no_credentials():
    tracker = _tracker(FakeClient(), experiment_id="7")
    tracker.hook.__dict__["_settings"]["tracking_uri"] = "http://bob:pw@mlflow.example:5000"
    assert tracker.container_env("r1") == {
        "MLFLOW_RUN_ID": "r1",
        "MLFLOW_TRACKING_URI": URI,
        "MLFLOW_EXPERIMENT_ID": "7",
    }


def test_importing_the_tracking_modules_imports_no_mlflow():
    probe = (
        "import sys, airflow_mlops_provider.sweeps.tracking, airflow_mlops_provider.sweeps.tracking_store; "
        "print('mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- the hook's artifact helpers ----------------------------------------------------------------------


def _hook(tracking_uri: str, artifact_uri: str, **settings: Any) -> MlflowHook:
    client = FakeClient([_run("r1")])
    client.runs["r1"].info._artifact_uri = artifact_uri
    hook = MlflowHook()
    hook.__dict__["client"] = client
    hook.__dict__["_settings"] = {
        "tracking_uri": tracking_uri,
        "registry_uri": tracking_uri,
        "login": None,
        "secret": None,
        "insecure": False,
        "ui_url": "",
        **settings,
    }
    return hook


@pytest.mark.parametrize(
    ("tracking_uri", "artifact_uri", "url"),
    [
        (
            "http://h:5000",
            "mlflow-artifacts:/1/r1/artifacts",
            "http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/board.json",
        ),
        (
            "https://h/prefix/",
            "mlflow-artifacts://other:6000/1/r1/artifacts",
            "https://other:6000/prefix/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/board.json",
        ),
        ("http://h:5000", "s3://bucket/1/r1/artifacts", None),
        ("sqlite:///tmp/m.db", "mlflow-artifacts:/1/r1/artifacts", None),
    ],
    ids=["proxied", "proxied-with-host-and-prefix", "s3", "not-http"],
)
def test_proxied_artifact_url(tracking_uri, artifact_uri, url):
    assert _hook(tracking_uri, artifact_uri)._proxied_artifact_url("r1", "board.json") == url


@pytest.mark.parametrize(
    ("settings", "headers", "auth"),
    [
        ({"secret": "tok"}, {"Authorization": "Bearer tok"}, None),
        ({"login": "bob", "secret": "pw"}, {}, ("bob", "pw")),
        ({}, {}, None),
    ],
    ids=["token", "basic", "none"],
)
def test_artifact_requests_carry_the_hooks_credentials(monkeypatch, settings, headers, auth):
    import requests

    sent = {}

    class Answer:
        status_code, content, text = 200, b"{}", "{}"

    def request(method, url, **kwargs):
        sent.update(kwargs, method=method, url=url)
        return Answer()

    monkeypatch.setattr(requests, "request", request)
    hook = _hook("http://h:5000", "mlflow-artifacts:/1/r1/artifacts", **settings)
    hook.log_text_artifact("r1", "hello", "a.txt")
    assert (sent["method"], sent["data"], sent["headers"], sent["auth"]) == ("PUT", b"hello", headers, auth)
    assert sent["url"] == "http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/a.txt"
    Answer.status_code, Answer.text = 503, "busy"
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"failed with error code 503 != 200") as raised:
        hook.read_text_artifact("r1", "a.txt")
    assert hook.is_transient_error(raised.value)
