"""SweepTracker against a real ``mlflow server``: parent and child runs, the trial cache, the
leaderboard artifacts, refused experiment names, and a server that is down or goes away."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import urllib.parse
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops_provider.hooks import mlflow as hook_module
from airflow_mlops_provider.sweeps.select import select_best
from airflow_mlops_provider.sweeps.tracking import SweepTracker, TrackingConfig
from tests.support.mlflow_server import start_mlflow_server
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration

TOKEN = "sweep-tracking-secret-4c1d9e"
IDENTITY = {
    "dag_id": "it_tracking",
    "task_id": "plan",
    "run_id": "manual__1",
    "map_index": "-1",
    "try_number": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(tmp_path_factory.mktemp("sweep-tracking-mlflow"), timeout=300)
    yield started
    started.stop()


def _conn_json(url: str, **extra: Any) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return json.dumps({"conn_type": "mlflow", "host": host, "port": int(port), "password": TOKEN, **extra})


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, server: MlflowServer) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", _conn_json(server.url))
    return "mlflow_default"


def _client(server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def _config(experiment: str | None = None, *, key: str = "data-v1", **kwargs: Any) -> TrackingConfig:
    return TrackingConfig(
        mlflow_conn_id=kwargs.pop("mlflow_conn_id", "mlflow_default"),
        experiment_name=experiment if experiment is not None else f"exp-{uuid.uuid4().hex[:8]}",
        cache_key=hashlib.sha256(key.encode()).hexdigest()[:32],
        cache_key_text=key,
        metric=kwargs.pop("metric", "loss"),
        **kwargs,
    )


def _trial(x: Any, **extra: Any) -> dict[str, Any]:
    return {"trial_id": f"t{x}", "hparams": {"x": x, "name": f"n{x}"}, "resources": {"gpus": 1}, **extra}


def _success(trial: dict[str, Any], loss: float, **extra: Any) -> dict[str, Any]:
    return {**trial, "status": "success", "metrics": {"loss": loss, "acc": 1 - loss}, "seconds": 0.5, **extra}


def _failed(trial: dict[str, Any], error: str, failure: str = "trial") -> dict[str, Any]:
    return {**trial, "status": "failed", "error": error, "tail": ["line 1", "boom"], "failure": failure}


def _started(config: TrackingConfig, identity: dict[str, str] | None = None, **params: Any) -> SweepTracker:
    tracker = SweepTracker(config)
    started = tracker.start_sweep(
        identity or IDENTITY, {"search_space": {"x": [1, 2]}, "mode": "min", **params}
    )
    assert started is not None
    assert started.parent_run_id
    assert started.experiment_id
    return tracker


def _artifact(server: MlflowServer, run_id: str, path: str) -> str:
    """An artifact as the MLflow UI downloads it (``/get-artifact``), independently of the hook."""
    query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(f"{server.url}/get-artifact?{query}", timeout=30) as resp:
        return resp.read().decode()


def _runs(server: MlflowServer, experiment_id: str) -> list[Any]:
    return _client(server).search_runs([experiment_id], max_results=5000)


def test_start_sweep_twice_makes_one_parent_run(server, conn):
    config = _config()
    first = _started(config)
    assert first.config.mode == "min"
    client = _client(server)
    client.set_terminated(first.config.parent_run_id, "FINISHED")
    second = _started(config, n_trials=3, search_space={"x": [1, 2, 3]})
    assert second.config.parent_run_id == first.config.parent_run_id
    runs = _runs(server, second.config.experiment_id)
    assert len(runs) == 1
    parent = runs[0]
    assert parent.info.status == "RUNNING"  # a rerun of the DAG run reopens its run
    assert parent.data.tags["airflow.dag_id"] == "it_tracking"
    assert parent.data.tags["airflow.run_id"] == "manual__1"
    assert parent.data.tags["mlops.sweep_task"] == "plan"
    assert json.loads(parent.data.params["search_space"]) == {"x": [1, 2]}  # logged once
    assert parent.data.params["n_trials"] == "3"
    assert json.loads(parent.data.tags["mlops.param.search_space"]) == {"x": [1, 2, 3]}
    # Another DAG run of the same DAG is another parent.
    other = _started(config, {**IDENTITY, "run_id": "manual__2"})
    assert other.config.parent_run_id != first.config.parent_run_id


def test_trial_run_is_found_again_and_a_finished_one_is_returned(server, conn):
    tracker = _started(_config())
    ident = {**IDENTITY, "task_id": "train", "map_index": "3"}
    ok, bad, infra = _trial(1), _trial(2), _trial(3)
    first = tracker.trial_run(ok, ident)
    again = tracker.trial_run(ok, {**ident, "try_number": "2"})
    assert first is not None
    assert again is not None
    assert again.run_id == first.run_id
    assert again.record_if_done is None
    client = _client(server)
    run = client.get_run(first.run_id)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == tracker.config.parent_run_id
    assert (tags["airflow.dag_id"], tags["airflow.task_id"], tags["airflow.map_index"]) == (
        "it_tracking",
        "train",
        "3",
    )
    assert tags["airflow.run_id"] == "manual__1"
    assert tags["airflow.try_number"] == "2"
    assert tags["mlops.trial_id"] == "t1"
    assert tags["mlflow.runName"] == "trial-t1"
    assert run.data.params == {"x": "1", "name": "n1", "resources.gpus": "1"}

    tracker.finish_trial(first.run_id, _success(ok, 0.25, outputs={"model": "/m/1"}))
    done = tracker.trial_run(ok, ident)
    assert done is not None
    assert done.run_id == first.run_id
    assert done.status == "FINISHED"
    assert done.record_if_done == {
        "status": "success",
        "metrics": {"loss": 0.25, "acc": 0.75},
        "outputs": {"model": "/m/1"},
        "seconds": 0.5,
    }
    finished = client.get_run(first.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics == {"loss": 0.25, "acc": 0.75, "mlops.seconds": 0.5}
    assert finished.data.tags["mlops.cache_key"] == tracker.config.cache_key

    run_bad = tracker.trial_run(bad, ident)
    tracker.finish_trial(run_bad.run_id, _failed(bad, "exit code 1"))
    assert client.get_run(run_bad.run_id).info.status == "FAILED"
    assert client.get_run(run_bad.run_id).data.tags["mlops.error"] == "exit code 1"
    reused = tracker.trial_run(bad, ident)
    assert reused.record_if_done == {
        "status": "failed",
        "error": "exit code 1",
        "tail": ["line 1", "boom"],
        "failure": "trial",
    }

    # Trouble around the trial (not cacheable): the retry reuses the run, RUNNING again.
    run_infra = tracker.trial_run(infra, ident)
    tracker.finish_trial(run_infra.run_id, _failed(infra, "worker lost", failure="infra"))
    assert "mlops.cache_key" not in client.get_run(run_infra.run_id).data.tags
    retried = tracker.trial_run(infra, ident)
    assert retried.run_id == run_infra.run_id
    assert retried.record_if_done is None
    assert client.get_run(run_infra.run_id).info.status == "RUNNING"
    assert "mlops.error" not in client.get_run(run_infra.run_id).data.tags
    tracker.finish_trial(run_infra.run_id, _success(infra, 0.5))

    children = [r for r in _runs(server, tracker.config.experiment_id) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
    assert tracker.progress() == {"done": 3, "failed": 1, "running": 0, "best": ("t1", 0.25)}


def test_a_new_cache_key_makes_new_trial_runs_under_the_same_parent(server, conn):
    config = _config()
    tracker = _started(config)
    trial = _trial(1)
    run = tracker.trial_run(trial, IDENTITY)
    tracker.finish_trial(run.run_id, _success(trial, 0.1))
    other_key = _started(_config(config.experiment_name, key="data-v2"))
    assert other_key.config.parent_run_id == tracker.config.parent_run_id
    fresh = other_key.trial_run(trial, IDENTITY)
    assert fresh.run_id != run.run_id
    assert fresh.record_if_done is None


def test_cached_results_serve_other_dag_runs_of_the_key(server, conn, caplog):
    config = _config()
    first = _started(config)
    trials = [_trial(i) for i in range(5)]
    runs = {}
    for trial in trials[:4]:
        runs[trial["trial_id"]] = run = first.trial_run(trial, IDENTITY)
        outcome = (
            _failed(trial, "OOM killed")
            if trial["trial_id"] == "t3"
            else _success(trial, 0.1 * (trial["hparams"]["x"] + 1))
        )
        first.finish_trial(run.run_id, outcome)

    later = _started(config, {**IDENTITY, "run_id": "scheduled__2"})
    caplog.set_level(logging.INFO)
    found = later.cached_results(trials)
    assert sorted(found) == ["t0", "t1", "t2", "t3"]
    assert found["t1"] == {
        **trials[1],
        "status": "success",
        "metrics": {"loss": 0.2, "acc": 0.8},
        "seconds": 0.5,
        "cached": True,
        "mlflow_run_id": runs["t1"].run_id,
    }
    assert found["t3"]["status"] == "failed"
    assert found["t3"]["error"] == "OOM killed"
    assert found["t3"]["cached"]

    without_failures = _started(
        _config(config.experiment_name, cache_failures=False), {**IDENTITY, "run_id": "r3"}
    )
    assert sorted(without_failures.cached_results(trials)) == ["t0", "t1", "t2"]

    caplog.clear()
    other_metric = _started(_config(config.experiment_name, metric="auc"), {**IDENTITY, "run_id": "r4"})
    assert other_metric.cached_results(trials) == {"t3": found["t3"]}
    assert f"cache miss: run {runs['t0'].run_id} lacks metric 'auc'" in caplog.text

    assert (
        _started(_config(config.experiment_name, key="data-v2"), {**IDENTITY, "run_id": "r5"}).cached_results(
            trials
        )
        == {}
    )


def test_cache_read_mode_does_not_write_entries(server, conn):
    config = _config(cache="read")
    tracker = _started(config)
    trial = _trial(1)
    run = tracker.trial_run(trial, IDENTITY)
    tracker.finish_trial(run.run_id, _success(trial, 0.3))
    assert "mlops.cache_key" not in _client(server).get_run(run.run_id).data.tags
    assert _started(config, {**IDENTITY, "run_id": "r2"}).cached_results([trial]) == {}


def test_cache_lookup_is_one_paginated_search(server, conn, monkeypatch):
    config = _config()
    tracker = _started(config)
    trials = [_trial(i) for i in range(45)]
    for trial in trials:
        run = tracker.trial_run(trial, IDENTITY)
        tracker.finish_trial(run.run_id, _success(trial, float(trial["hparams"]["x"])))
    later = _started(config, {**IDENTITY, "run_id": "r2"})
    monkeypatch.setattr(hook_module, "SEARCH_PAGE_SIZE", 10)
    client = later.hook.get_conn()
    calls = []
    search = client.search_runs
    monkeypatch.setattr(client, "search_runs", lambda *a, **kw: calls.append(kw) or search(*a, **kw))
    found = later.cached_results(trials)
    assert sorted(found) == sorted(t["trial_id"] for t in trials)
    assert len(calls) == 5  # 45 runs, 10 a page
    assert all("mlops.cache_key" in kw["filter_string"] for kw in calls)


def test_values_with_quotes_are_searched_safely(server, conn):
    tracker = _started(_config(), {**IDENTITY, "run_id": "manual__it's"})
    again = _started(_config(tracker.config.experiment_name), {**IDENTITY, "run_id": "manual__it's"})
    assert again.config.parent_run_id == tracker.config.parent_run_id
    trial = {"trial_id": 'say "hi"', "hparams": {"q": "it's"}}
    run = tracker.trial_run(trial, IDENTITY)
    assert tracker.trial_run(trial, IDENTITY).run_id == run.run_id
    both = 'it\'s "both"'
    with pytest.raises(AirflowFailException, match=re.escape(f"cannot search MLflow for the value {both!r}")):
        tracker.trial_run({"trial_id": both, "hparams": {}}, IDENTITY)


@pytest.mark.parametrize("tracking", ["required", "best_effort"])
def test_experiment_names_mlflow_refuses(server, conn, tracking):
    with pytest.raises(
        AirflowFailException,
        match=r"experiment_name '' is refused by MLflow: an experiment name is a non-empty string",
    ):
        SweepTracker(_config("", tracking=tracking)).start_sweep(IDENTITY, {})
    long_name = "x" * 600
    with pytest.raises(
        AirflowFailException,
        match=rf"experiment_name '{long_name}' is refused by MLflow at http://127\.0\.0\.1:\d+: .*",
    ):
        SweepTracker(_config(long_name, tracking=tracking)).start_sweep(IDENTITY, {})
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    client = _client(server)
    client.delete_experiment(client.create_experiment(name))
    with pytest.raises(
        AirflowFailException,
        match=rf"experiment_name '{name}' is refused by MLflow: experiment \d+ of that name is deleted",
    ):
        SweepTracker(_config(name, tracking=tracking)).start_sweep(IDENTITY, {})


def test_long_param_values_are_truncated_with_a_note(server, conn, caplog):
    tracker = _started(_config(), search_space="s" * 7000)
    caplog.set_level(logging.WARNING)
    trial = {"trial_id": "long", "hparams": {"prompt": "p" * 7000, "ok": 1}}
    run = tracker.trial_run(trial, IDENTITY)
    data = _client(server).get_run(run.run_id).data
    assert len(data.params["prompt"]) == 6000
    assert data.params["prompt"].endswith("...[truncated 7000 chars]")
    assert data.tags["mlops.truncated_params"] == "prompt"
    assert "param prompt is longer than MLflow keeps" in caplog.text
    parent = _client(server).get_run(tracker.config.parent_run_id).data
    assert parent.params["search_space"].endswith("...[truncated 7000 chars]")


def test_outputs_in_a_tag_or_an_artifact_come_back_from_the_cache(server, conn):
    config = _config()
    tracker = _started(config)
    small, big = _trial(1), _trial(2)
    outputs_big = {"paths": [f"/models/{i:05d}.joblib" for i in range(400)]}
    for trial, outputs in ((small, {"model": "/m.joblib"}), (big, outputs_big)):
        run = tracker.trial_run(trial, IDENTITY)
        tracker.finish_trial(run.run_id, _success(trial, 0.2, outputs=outputs))
    client = _client(server)
    big_run = tracker.trial_run(big, IDENTITY).run_id
    assert client.get_run(big_run).data.tags["mlops.outputs_artifact"] == "outputs.json"
    found = _started(config, {**IDENTITY, "run_id": "r2"}).cached_results([small, big])
    assert found["t1"]["outputs"] == {"model": "/m.joblib"}
    assert found["t2"]["outputs"] == outputs_big


def test_leaderboard_artifacts_and_best_trial_on_the_parent(server, conn, tmp_path):
    tracker = _started(_config())
    trials = [_trial(i) for i in range(4)]
    records = []
    for trial in trials:
        run = tracker.trial_run(trial, IDENTITY)
        record = (
            _failed(trial, "exit code 1")
            if trial["trial_id"] == "t2"
            else _success(trial, 1.0 / (trial["hparams"]["x"] + 1))
        )
        record = {**record, "cached": trial["trial_id"] == "t0", "mlflow_run_id": run.run_id}
        tracker.finish_trial(run.run_id, record)
        records.append(record)
    result = select_best(records, metric="loss", mode="min", min_success_ratio=0.5)
    result["n_cached"] = 1
    tracker.log_leaderboard(result)

    client = _client(server)
    parent_id = tracker.config.parent_run_id
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial_id"] == "t3"
    assert parent.data.tags["mlops.best_run_id"] == records[3]["mlflow_run_id"]
    assert parent.data.metrics == {
        "best_loss": 0.25,
        "n_trials": 4.0,
        "n_succeeded": 3.0,
        "n_failed": 1.0,
        "n_cached": 1.0,
    }
    board = json.loads(_artifact(server, parent_id, "leaderboard.json"))
    assert board["best_trial_id"] == "t3"
    assert board["metric"] == "loss"
    assert [row["trial_id"] for row in board["leaderboard"]] == ["t3", "t1", "t0", "t2"]
    rows = list(csv.DictReader(io.StringIO(_artifact(server, parent_id, "leaderboard.csv"))))
    assert list(rows[0]) == [
        "rank",
        "trial_id",
        "status",
        "cached",
        "loss",
        "name",
        "x",
        "error",
        "mlflow_run_id",
    ]
    assert [(r["rank"], r["trial_id"], r["status"], r["cached"], r["x"], r["error"]) for r in rows] == [
        ("1", "t3", "success", "False", "3", ""),
        ("2", "t1", "success", "False", "1", ""),
        ("3", "t0", "success", "True", "0", ""),
        ("", "t2", "failed", "False", "2", "exit code 1"),
    ]
    assert float(rows[0]["loss"]) == 0.25

    failing = _started(_config(), {**IDENTITY, "run_id": "failing"})
    failing.log_leaderboard(
        {"error": "only 0 of 4 trials succeeded", "metric": "loss", "mode": "min"}, succeeded=False
    )
    failed_parent = client.get_run(failing.config.parent_run_id)
    assert failed_parent.info.status == "FAILED"
    assert failed_parent.data.tags["mlops.sweep_error"] == "only 0 of 4 trials succeeded"


def test_no_secret_in_runs_logs_or_container_env(server, monkeypatch, caplog):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = {"conn_type": "mlflow", "host": host, "port": int(port), "login": "bob", "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    caplog.set_level(logging.DEBUG)
    tracker = _started(_config())
    trial = _trial(1)
    run = tracker.trial_run(trial, IDENTITY)
    env = tracker.container_env(run.run_id)
    assert env == {
        "MLFLOW_RUN_ID": run.run_id,
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_EXPERIMENT_ID": tracker.config.experiment_id,
    }
    tracker.finish_trial(run.run_id, _failed(trial, "failed"))
    tracker.log_leaderboard({"error": "x", "metric": "loss"}, succeeded=False)
    for found in _runs(server, tracker.config.experiment_id):
        assert TOKEN not in json.dumps([found.data.tags, found.data.params])
    assert TOKEN not in caplog.text


def test_credentials_in_the_uri_stay_out_of_the_container_env_and_messages(server, monkeypatch, caplog):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = {"conn_type": "mlflow", "host": f"http://bob:{TOKEN}@{host}:{port}"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    caplog.set_level(logging.INFO)
    tracker = _started(_config())
    run = tracker.trial_run(_trial(1), IDENTITY)
    assert tracker.container_env(run.run_id)["MLFLOW_TRACKING_URI"] == server.url
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("airflow_mlops_provider.sweeps")]
    assert ours
    assert not any(TOKEN in message for message in ours)


def _down_config(monkeypatch: pytest.MonkeyPatch, tracking: str) -> tuple[TrackingConfig, int]:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DOWN", _conn_json(f"http://127.0.0.1:{port}"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr("airflow_mlops_provider.sweeps.tracking_base.ATTEMPTS", 2)
    return _config("down", tracking=tracking, mlflow_conn_id="mlflow_down"), port


def test_server_down_required_fails_the_task_for_a_retry(monkeypatch, caplog):
    config, port = _down_config(monkeypatch, "required")
    with pytest.raises(AirflowException) as raised:
        SweepTracker(config).start_sweep(IDENTITY, {})
    assert not isinstance(raised.value, AirflowFailException)
    message = str(raised.value)
    assert f"MLflow tracking server http://127.0.0.1:{port} did not answer" in message
    assert "tracking='best_effort' goes on without MLflow" in message
    assert TOKEN not in message
    assert TOKEN not in caplog.text


def test_server_down_best_effort_warns_once_and_goes_on(monkeypatch, caplog):
    config, port = _down_config(monkeypatch, "best_effort")
    tracker = SweepTracker(config)
    caplog.set_level(logging.WARNING)
    assert tracker.start_sweep(IDENTITY, {}) is None
    assert tracker.enabled is False
    assert tracker.cached_results([_trial(1)]) == {}
    assert tracker.trial_run(_trial(1), IDENTITY) is None
    assert tracker.container_env("abc") == {}
    off = [r for r in caplog.records if "MLflow tracking is off" in r.getMessage()]
    assert len(off) == 1
    assert off[0].levelno == logging.WARNING
    assert f"http://127.0.0.1:{port}" in off[0].getMessage()
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("tracking", ["required", "best_effort"])
def test_server_stopped_mid_sweep(tmp_path, monkeypatch, caplog, tracking):
    own = start_mlflow_server(tmp_path / "mlflow", timeout=300)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", _conn_json(own.url))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        tracker = _started(_config(tracking=tracking))
        trial = _trial(1)
        run = tracker.trial_run(trial, IDENTITY)
    finally:
        own.stop()
    if tracking == "required":
        with pytest.raises(
            AirflowException, match=rf"MLflow tracking server {own.url} did not answer"
        ) as raised:
            tracker.finish_trial(run.run_id, _success(trial, 0.1))
        assert not isinstance(raised.value, AirflowFailException)
    else:
        caplog.set_level(logging.WARNING)
        assert tracker.finish_trial(run.run_id, _success(trial, 0.1)) is None
        assert tracker.enabled is False
        assert tracker.progress() is None
        assert "tracking='best_effort' goes on without it" in caplog.text
    assert TOKEN not in caplog.text
