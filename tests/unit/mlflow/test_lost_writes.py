"""Registry writes whose answer was lost (found by the chaos suite, scenario 2), no server.

- A version create that timed out is still in flight: the hook looks for it during one more
  request timeout before creating again, and when both commit the oldest wins and the other is
  deleted, in the try and in the task instance's next try.
- A registered-model create that got no answer is sent again in the same try (it is safe to),
  rather than failing the try.
- An alias move that committed without an answer: the retry of ``MlflowSetAliasOperator`` or
  ``MlflowPromoteModelOperator`` reports that move (the decision, the previous version, the
  Asset event) instead of finding the alias already there and reporting no move.

The timeouts are real: a request to a loopback socket that never answers, through MLflow's own
client.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_mlops_provider.hooks.mlflow import TI_KEY_TAG, MlflowHook
from airflow_mlops_provider.operators.mlflow import (
    PROMOTION_TAG_PREFIX,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
    ti_identity_tags,
)

# -- a request that gets no answer, from MLflow's own client ---------------------------------


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def _lost_create(monkeypatch, port: int) -> BaseException:
    """What creating a version raises when the server holds it past MLflow's request timeout."""
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    conn = {"conn_type": "mlflow", "host": "127.0.0.1", "port": port, "password": "tok-silent"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_SILENT", json.dumps(conn))
    hook = MlflowHook(mlflow_conn_id="mlflow_silent")
    with pytest.raises(MlflowException) as err:
        hook.create_model_version_once(name="m", source="s3://b/m")
    return err.value


def test_a_timed_out_request_is_a_timeout_and_a_refused_one_is_not(monkeypatch, silent_port):
    from mlflow.exceptions import MlflowException

    from tests.conftest import free_port

    held = _lost_create(monkeypatch, silent_port)
    assert MlflowHook.is_timeout(held)
    assert not MlflowHook(mlflow_conn_id="mlflow_silent").is_answer(held)
    conn = {"conn_type": "mlflow", "host": "127.0.0.1", "port": free_port()}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEAD", json.dumps(conn))
    with pytest.raises(MlflowException) as refused:
        MlflowHook(mlflow_conn_id="mlflow_dead").create_model_version_once(name="m", source="s3://b/m")
    assert not MlflowHook.is_timeout(refused.value)


# -- a registry in memory: versions, tags, aliases --------------------------------------------


class Registry:
    """The part of ``MlflowClient`` the hook's version and alias methods use, in memory."""

    def __init__(self) -> None:
        self.versions: dict[str, SimpleNamespace] = {}
        self.aliases: dict[str, str] = {}
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def commit(self, tags: dict[str, str]) -> SimpleNamespace:
        with self.lock:
            number = str(len(self.versions) + len(self.deleted) + 1)
            version = SimpleNamespace(
                version=number, tags=dict(tags), status="READY", run_id=None, source="s"
            )
            self.versions[number] = version
            return version

    def search_model_versions(self, filter_string: str) -> list[SimpleNamespace]:
        key = filter_string.rsplit("= '", 1)[1].rstrip("'")
        return [v for v in self.versions.values() if v.tags.get(TI_KEY_TAG) == key]

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        found = self.versions[str(version)]
        aliases = [a for a, v in self.aliases.items() if v == found.version]
        return SimpleNamespace(**vars(found), aliases=aliases)

    def delete_model_version(self, name: str, version: str) -> None:
        del self.versions[str(version)]
        self.deleted.append(str(version))


def _hook(registry: Registry) -> MlflowHook:
    hook = MlflowHook(mlflow_conn_id="mlflow_memory")
    hook.__dict__["client"] = registry
    hook.__dict__["_settings"] = {"registry_uri": "http://registry.invalid", "tracking_uri": "", "ui_url": ""}
    return hook


TAGS = {TI_KEY_TAG: "ti-1"}


def test_a_create_still_in_flight_is_waited_for_not_sent_again(monkeypatch, silent_port):
    """The lost create commits 1.5 s after the client gave up: found, not duplicated."""
    timeout = _lost_create(monkeypatch, silent_port)  # MLFLOW_HTTP_REQUEST_TIMEOUT is 1 s now
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    registry = Registry()
    hook = _hook(registry)
    sent: list[float] = []

    def create(**kwargs: Any) -> SimpleNamespace:
        sent.append(time.monotonic())
        if len(sent) == 1:
            threading.Timer(1.5, registry.commit, args=(kwargs["tags"],)).start()
            raise timeout
        return registry.commit(kwargs["tags"])

    monkeypatch.setattr(hook, "create_model_version_once", create)
    version = hook.create_version_once_per_ti("m", "ti-1", source="s3://b/m", tags=TAGS)
    assert len(sent) == 1
    assert version.version == "1"
    assert list(registry.versions) == ["1"]


def test_when_the_lost_create_commits_too_the_oldest_version_wins(monkeypatch):
    """The create was lost (reset), created again, and the lost one committed before that answer."""
    from mlflow.exceptions import MlflowException

    registry = Registry()
    hook = _hook(registry)
    calls = 0

    def create(**kwargs: Any) -> SimpleNamespace:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MlflowException("API request failed with exception ConnectionResetError(104)")
        registry.commit(kwargs["tags"])  # the lost one, late
        return registry.commit(kwargs["tags"])

    monkeypatch.setattr(hook, "create_model_version_once", create)
    version = hook.create_version_once_per_ti("m", "ti-1", source="s3://b/m", tags=TAGS)
    assert (calls, version.version) == (2, "1")
    assert (list(registry.versions), registry.deleted) == (["1"], ["2"])


def test_a_registered_model_create_without_answer_is_sent_again_in_the_same_try(monkeypatch):
    from mlflow.exceptions import MlflowException, RestException

    registry = Registry()
    models: list[str] = []
    creates: list[str] = []

    def create_registered_model(name: str) -> None:
        creates.append(name)
        models.append(name)  # committed...
        if len(creates) == 1:
            raise MlflowException("API request failed with exception ConnectionResetError(104)")

    def create(**kwargs: Any) -> SimpleNamespace:
        if kwargs["name"] not in models:
            raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"})
        return registry.commit(kwargs["tags"])

    registry.create_registered_model = create_registered_model  # type: ignore[attr-defined]
    hook = _hook(registry)
    monkeypatch.setattr(hook, "create_model_version_once", create)
    version = hook.create_version_once_per_ti("m", "ti-1", source="s3://b/m", tags=TAGS)
    assert (version.version, creates) == ("1", ["m"])


class _TI:
    def __init__(self, task_id: str, try_number: int) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "d", task_id, "manual__1", -1
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def _context(task_id: str, try_number: int) -> dict[str, Any]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"ti": _TI(task_id, try_number), "outlet_events": OutletEventAccessors()}


def _events(context: dict[str, Any]) -> list[dict[str, Any]]:
    from airflow.sdk import AssetAlias

    from airflow_mlops_provider.assets.mlflow import MLFLOW_MODEL_EVENTS_ALIAS

    return [
        e.extra for e in context["outlet_events"][AssetAlias(MLFLOW_MODEL_EVENTS_ALIAS)].asset_alias_events
    ]


def test_a_retry_of_register_keeps_the_oldest_version_and_deletes_the_late_one():
    """A lost create committed after the try ended: the retry deletes it, unless an alias holds it."""
    registry = Registry()
    op = MlflowRegisterModelOperator(task_id="register", model_name="m", source="s3://b/m")
    op.__dict__["hook"] = _hook(registry)
    key = ti_identity_tags(_context("register", 2))[TI_KEY_TAG]
    for _ in range(3):
        registry.commit({TI_KEY_TAG: key})
    registry.aliases["pinned"] = "3"
    result = op.execute(_context("register", 2))
    assert result["version"] == "1"
    assert (sorted(registry.versions), registry.deleted) == (["1", "3"], ["2"])


class AliasHook:
    """The hook calls of the alias operators; ``set_alias`` commits, then loses its answer once."""

    def __init__(self, aliases: dict[str, str], metrics: dict[str, float]) -> None:
        self.aliases = aliases
        self.metrics = metrics
        self.tags: dict[str, dict[str, str]] = {}
        self.moves: list[tuple[str, str]] = []
        self.lose_next_answer = True

    def alias_version(self, name: str, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.aliases[alias] = str(version)
        self.moves.append((alias, str(version)))
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ConnectionResetError("the answer to the alias move was lost")

    def version_tags(self, name: str, version: str | int) -> dict[str, str]:
        return dict(self.tags.get(str(version), {}))

    def set_version_tags(self, name: str, version: str | int, tags: dict[str, str]) -> None:
        self.tags.setdefault(str(version), {}).update(tags)

    def version_metrics(self, name: str, version: str, *, wanted: str | None = None) -> Any:
        return SimpleNamespace(run_id=f"run-{version}", metrics={"auc": self.metrics[version]})

    def model_version_url(self, name: str, version: Any) -> str:
        return ""


def test_set_alias_retry_after_a_lost_answer_reports_the_move():
    hook = AliasHook({"prod": "1"}, {})
    op = MlflowSetAliasOperator(task_id="alias", model_name="m", alias="prod", version="2")
    op.__dict__["hook"] = hook
    with pytest.raises(ConnectionResetError):
        op.execute(_context("alias", 1))
    retry = _context("alias", 2)
    assert op.execute(retry)["previous_version"] == "1"
    assert [(e["version"], e["previous_version"]) for e in _events(retry)] == [("2", "1")]
    # Another task instance finds the alias there already: no move, no event.
    other = _context("other", 1)
    assert op.execute(other)["previous_version"] == "2"
    assert _events(other) == []


def test_promote_retry_after_a_lost_answer_reports_the_promotion():
    hook = AliasHook({"champion": "1"}, {"1": 0.8, "2": 0.9})
    op = MlflowPromoteModelOperator(task_id="promote", model_name="m", challenger_version="2", metric="auc")
    op.__dict__["hook"] = hook
    with pytest.raises(ConnectionResetError):
        op.execute(_context("promote", 1))
    recorded = dict(hook.tags["2"])
    retry = _context("promote", 2)
    result = op.execute(retry)
    assert (result["decision"], result["promoted"], result["champion_version"]) == ("promote", True, "1")
    assert (result["champion_value"], result["challenger_value"]) == (0.8, 0.9)
    assert result["delta"] == pytest.approx(0.1)
    assert hook.tags["2"] == recorded  # the decision record stays the first try's: "promote"
    assert recorded[PROMOTION_TAG_PREFIX + "decision"] == "promote"
    assert hook.moves == [("champion", "2")]
    assert [(e["version"], e["previous_version"]) for e in _events(retry)] == [("2", "1")]
    # Another task instance evaluating the same challenger finds it champion already: "keep".
    assert op.execute(_context("other", 1))["decision"] == "keep"
