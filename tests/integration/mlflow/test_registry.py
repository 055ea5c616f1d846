"""Register, alias and champion/challenger against a real ``mlflow server`` (operators in-process)."""

from __future__ import annotations

import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.assets.mlflow import MLFLOW_MODEL_EVENTS_ALIAS, mlflow_model_asset
from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.links.mlflow import run_url_for
from airflow_mlops_provider.operators.mlflow import (
    PROMOTION_TAG_PREFIX,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)
from tests.integration.mlflow.conftest import TOKEN, make_context, metric_run, mlflow_conn_json

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(server):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def _versions(server, name: str) -> list:
    return _client(server).search_model_versions(f"name = '{name}'")


def _alias_events(ctx) -> list:
    from airflow.sdk import AssetAlias

    return ctx["outlet_events"][AssetAlias(MLFLOW_MODEL_EVENTS_ALIAS)].asset_alias_events


def test_register_from_run_is_idempotent_per_task_instance(mlflow_conn, mlflow_server, sklearn_model):
    name = _name("churn")
    kwargs = dict(
        task_id="register",
        model_name=name,
        run_id=sklearn_model.run_id,
        artifact_path="model",
        alias="candidate",
        tags={"team": "ml"},
        description="first",
    )
    ctx = make_context()
    first = MlflowRegisterModelOperator(**kwargs).execute(ctx)
    assert first == {
        "name": name,
        "version": "1",
        "run_id": sklearn_model.run_id,
        "source": sklearn_model.source,
    }
    # A second run of the same task instance (a retry, a cleared task) reuses the version.
    again = MlflowRegisterModelOperator(**kwargs).execute(make_context(try_number=2))
    assert again == first
    versions = _versions(mlflow_server, name)
    assert [v.version for v in versions] == ["1"]
    tags = versions[0].tags
    assert tags["team"] == "ml"
    assert (tags["airflow.dag_id"], tags["airflow.task_id"], tags["airflow.run_id"]) == (
        "it_mlflow",
        "register",
        "manual__1",
    )
    assert tags["airflow.map_index"] == "-1"
    assert _client(mlflow_server).get_model_version_by_alias(name, "candidate").version == "1"

    # Another DAG run is another task instance: a new version.
    other = MlflowRegisterModelOperator(**kwargs).execute(make_context(run_id="manual__2"))
    assert other["version"] == "2"

    # Asset event with the version; links to the run and the version.
    (event,) = _alias_events(ctx)
    assert event.dest_asset_key.uri == mlflow_model_asset(name).uri
    assert event.extra["event"] == "registered"
    assert event.extra["version"] == "1"
    assert event.extra["created"] is True
    urls = ctx["ti"].xcom["mlflow_urls"]
    assert urls == {
        "run_id": sklearn_model.run_id,
        "model_version": f"{mlflow_server.url}/#/models/{name}/versions/1",
    }
    run_url = run_url_for("mlflow_default", sklearn_model.run_id)
    experiment_id = _client(mlflow_server).get_run(sklearn_model.run_id).info.experiment_id
    assert run_url == f"{mlflow_server.url}/#/experiments/{experiment_id}/runs/{sklearn_model.run_id}"


def test_register_from_model_id_and_from_source(mlflow_conn, mlflow_server, sklearn_model):
    name = _name("ids")
    by_id = MlflowRegisterModelOperator(task_id="by_id", model_name=name, model_id=sklearn_model.model_id)
    result = by_id.execute(make_context(task_id="by_id"))
    assert (result["version"], result["run_id"]) == ("1", sklearn_model.run_id)
    by_source = MlflowRegisterModelOperator(task_id="by_src", model_name=name, source=sklearn_model.source)
    assert by_source.execute(make_context(task_id="by_src"))["version"] == "2"
    assert _client(mlflow_server).get_model_version(name, "1").source == sklearn_model.source


@pytest.mark.parametrize(
    "lookup_answers",
    [True, False],
    ids=["recovered-in-the-same-try", "recovered-by-the-task-retry"],
)
def test_response_lost_after_commit_leaves_exactly_one_version(
    monkeypatch, mlflow_server, sklearn_model, proxy, lookup_answers
):
    """The proxy forwards the create, the server commits, the client gets a reset connection."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_conn_json(proxy.url))
    proxy.drop["/model-versions/create"] = 1
    if not lookup_answers:
        proxy.drop["/model-versions/search"] = 1
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the lookup GET gets no retry
    name = _name("fault")
    client = _client(mlflow_server)
    client.create_registered_model(name)
    kwargs = dict(task_id="register", model_name=name, source=sklearn_model.source)

    if lookup_answers:
        result = MlflowRegisterModelOperator(**kwargs).execute(make_context())
    else:
        with pytest.raises(ModelRegistryError, match="looking for a committed version failed too"):
            MlflowRegisterModelOperator(**kwargs).execute(make_context())
        # Airflow retries the task: try 2 looks the version up first.
        result = MlflowRegisterModelOperator(**kwargs).execute(make_context(try_number=2))

    creates = [r for r in proxy.seen if r.method == "POST" and "/model-versions/create" in r.path]
    assert [r.dropped for r in creates] == [True]  # one create reached the server; none repeated
    versions = _versions(mlflow_server, name)
    assert [v.version for v in versions] == [result["version"]] == ["1"]
    assert result["source"] == sklearn_model.source


def test_token_is_sent_per_hook_as_bearer(monkeypatch, proxy, mlflow_server):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_A", mlflow_conn_json(proxy.url, token="tok-a-1111"))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_B", mlflow_conn_json(proxy.url, token="tok-b-2222"))
    a, b = MlflowHook(mlflow_conn_id="mlflow_a"), MlflowHook(mlflow_conn_id="mlflow_b")
    a.get_conn().search_registered_models(max_results=1)
    b.get_conn().search_registered_models(max_results=1)
    a.get_conn().search_registered_models(max_results=1)
    assert [r.headers.get("authorization") for r in proxy.seen] == [
        "Bearer tok-a-1111",
        "Bearer tok-b-2222",
        "Bearer tok-a-1111",
    ]
    assert a.test_connection() == (True, f"Connected to MLflow at {proxy.url}")


def test_set_alias_moves_alias_and_emits_event(mlflow_conn, mlflow_server, sklearn_model):
    name = _name("alias")
    client = _client(mlflow_server)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(
            name, sklearn_model.source, model_id=sklearn_model.model_id, run_id=sklearn_model.run_id
        )
    ctx = make_context(task_id="alias")
    op = MlflowSetAliasOperator(task_id="alias", model_name=name, alias="prod", version="2")
    assert op.execute(ctx) == {"name": name, "alias": "prod", "version": "2", "previous_version": None}
    assert client.get_model_version_by_alias(name, "prod").version == "2"
    (event,) = _alias_events(ctx)
    assert event.extra == {
        "event": "promoted",
        "model_name": name,
        "alias": "prod",
        "version": "2",
        "previous_version": None,
    }
    # Another task instance setting it to the same version moves nothing: no "promotion".
    ctx2 = make_context(task_id="alias", run_id="manual__2")
    assert op.execute(ctx2)["previous_version"] == "2"
    assert _alias_events(ctx2) == []
    # A retry of the task instance that moved it reports that move (its first try may have
    # failed after the move, and a failed try's events are not recorded).
    ctx3 = make_context(task_id="alias", try_number=2)
    assert op.execute(ctx3)["previous_version"] is None
    assert [e.extra["previous_version"] for e in _alias_events(ctx3)] == [None]


# champion value (None: no champion), challenger value, mode, min_delta, decision, delta
CASES = [
    (None, 0.70, "max", 0.0, "promote", None),
    (0.80, 0.85, "max", 0.01, "promote", 0.05),
    (0.80, 0.75, "max", 0.0, "keep", -0.05),
    (0.80, 0.805, "max", 0.01, "keep", 0.005),
    (0.80, 0.80, "max", 0.0, "keep", 0.0),
    (None, 0.40, "min", 0.0, "promote", None),
    (0.30, 0.25, "min", 0.01, "promote", 0.05),
    (0.30, 0.35, "min", 0.0, "keep", -0.05),
    (0.30, 0.295, "min", 0.01, "keep", 0.005),
]
CASE_IDS = [
    "no-champion-max",
    "better-max",
    "worse-max",
    "equal-within-min-delta-max",
    "exactly-equal-max",
    "no-champion-min",
    "better-min",
    "worse-min",
    "equal-within-min-delta-min",
]


@pytest.mark.parametrize(("champ", "chall", "mode", "min_delta", "decision", "delta"), CASES, ids=CASE_IDS)
def test_champion_challenger(
    mlflow_conn, mlflow_server, sklearn_model, champ, chall, mode, min_delta, decision, delta
):
    name = _name("cc")
    client = _client(mlflow_server)
    client.create_registered_model(name)
    exp = "airflow-mlops-cc"
    champion_version = None
    if champ is not None:
        run = metric_run(mlflow_server.url, experiment=exp, metrics={"score": champ})
        champion_version = client.create_model_version(
            name, sklearn_model.source, model_id=sklearn_model.model_id, run_id=run
        ).version
        client.set_registered_model_alias(name, "champion", champion_version)
    run = metric_run(mlflow_server.url, experiment=exp, metrics={"score": chall})
    challenger = client.create_model_version(
        name, sklearn_model.source, model_id=sklearn_model.model_id, run_id=run
    ).version

    ctx = make_context(task_id="promote")
    op = MlflowPromoteModelOperator(
        task_id="promote",
        model_name=name,
        challenger_version=challenger,
        metric="score",
        mode=mode,
        min_delta=min_delta,
    )
    result = op.execute(ctx)

    assert result["decision"] == decision
    assert result["promoted"] is (decision == "promote")
    assert result["champion_version"] == champion_version
    assert result["challenger_value"] == chall
    assert result["champion_value"] == champ
    if delta is None:
        assert result["delta"] is None
    else:
        assert result["delta"] == pytest.approx(delta)
    holder = client.get_model_version_by_alias(name, "champion").version
    assert holder == (challenger if decision == "promote" else champion_version)
    tags = client.get_model_version(name, challenger).tags
    assert tags[PROMOTION_TAG_PREFIX + "decision"] == decision
    assert float(tags[PROMOTION_TAG_PREFIX + "challenger_value"]) == chall
    assert tags[PROMOTION_TAG_PREFIX + "champion_value"] == ("" if champ is None else repr(champ))
    assert tags[PROMOTION_TAG_PREFIX + "champion_version"] == (champion_version or "")
    assert tags[PROMOTION_TAG_PREFIX + "mode"] == mode
    events = _alias_events(ctx)
    if decision == "promote":
        (event,) = events
        assert (event.extra["event"], event.extra["version"]) == ("promoted", challenger)
    else:
        assert events == []


@pytest.mark.parametrize(
    "who", ["challenger", "champion"], ids=["challenger-lacks-metric", "champion-lacks-metric"]
)
def test_missing_metric_fails_clearly(mlflow_conn, mlflow_server, sklearn_model, who):
    name = _name("miss")
    client = _client(mlflow_server)
    client.create_registered_model(name)
    exp = "airflow-mlops-cc"
    champ_metrics = {"other": 1.0} if who == "champion" else {"score": 0.5}
    chall_metrics = {"other": 1.0} if who == "challenger" else {"score": 0.5}
    champ_run = metric_run(mlflow_server.url, experiment=exp, metrics=champ_metrics)
    client.create_model_version(name, sklearn_model.source, model_id=sklearn_model.model_id, run_id=champ_run)
    client.set_registered_model_alias(name, "champion", "1")
    chall_run = metric_run(mlflow_server.url, experiment=exp, metrics=chall_metrics)
    client.create_model_version(name, sklearn_model.source, model_id=sklearn_model.model_id, run_id=chall_run)
    op = MlflowPromoteModelOperator(
        task_id="promote", model_name=name, challenger_version="2", metric="score", mode="max"
    )
    with pytest.raises(AirflowFailException) as err:
        op.execute(make_context(task_id="promote"))
    version, run = ("2", chall_run) if who == "challenger" else ("1", champ_run)
    assert str(err.value) == (
        f"{who} version {version} of '{name}' has no metric 'score' (run '{run}' has ['other'])"
    )
    assert client.get_model_version_by_alias(name, "champion").version == "1"


def test_token_is_not_in_rendered_fields(mlflow_conn, sklearn_model):
    op = MlflowRegisterModelOperator(task_id="r", model_name="m", source=sklearn_model.source)
    rendered = {field: getattr(op, field) for field in op.template_fields}
    assert TOKEN not in repr(rendered)
