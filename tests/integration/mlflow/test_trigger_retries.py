"""The trigger retries transient registry errors and fails at once on others (real server, fault proxy)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from airflow_mlops_provider.triggers.mlflow import MlflowModelVersionTrigger
from tests.integration.mlflow.conftest import mlflow_conn_json

pytestmark = pytest.mark.integration

SEARCH = "/model-versions/search"


@pytest.fixture
def registered(mlflow_server, sklearn_model) -> str:
    """A registered model with version 1 (registered directly on the server)."""
    from mlflow import MlflowClient

    name = f"retry-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.url)
    client.create_registered_model(name)
    client.create_model_version(
        name, sklearn_model.source, run_id=sklearn_model.run_id, model_id=sklearn_model.model_id
    )
    return name


@pytest.fixture
def through_proxy(monkeypatch, proxy):
    """``mlflow_default`` through the fault proxy; MLflow's own HTTP retries off, so every fault
    reaches the trigger (with them on, MLflow would hide a short outage by itself)."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_conn_json(proxy.url, token="tok-right-9"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return proxy


def _first_event(trigger: MlflowModelVersionTrigger, timeout: float = 120) -> dict:
    async def first() -> dict:
        gen = trigger.run()
        try:
            event = await asyncio.wait_for(gen.__anext__(), timeout=timeout)
        finally:
            await gen.aclose()
        return event.payload

    return asyncio.run(first())


def _trigger(name: str) -> MlflowModelVersionTrigger:
    return MlflowModelVersionTrigger(
        mlflow_conn_id="mlflow_default", model_name=name, min_version=1, poll_interval=0.2
    )


@pytest.mark.parametrize(
    ("fault", "expected_seen"),
    [
        ({"answer": {SEARCH: (503, 3)}}, ["answer 503"] * 3),
        ({"answer": {SEARCH: (502, 1)}, "reset": {SEARCH: 1}}, ["reset", "answer 502"]),
    ],
    ids=["three-503s", "connection-reset-then-502"],
)
def test_transient_errors_are_retried_until_the_registry_answers(
    through_proxy, registered, sklearn_model, capsys, fault, expected_seen
):
    for kind, faults in fault.items():
        getattr(through_proxy, kind).update(faults)
    capsys.readouterr()
    payload = _first_event(_trigger(registered))
    assert payload["status"] == "success", payload
    assert payload["model_version"] == {
        "name": registered,
        "version": "1",
        "alias": None,
        "run_id": sklearn_model.run_id,
    }
    searches = [r for r in through_proxy.seen if SEARCH in r.path]
    assert sorted(r.fault for r in searches if r.fault) == sorted(expected_seen)
    assert searches[-1].fault is None  # the last query reached the server
    # Each retry is logged (Airflow's structured log writes to stdout here).
    logged = capsys.readouterr().out
    tries = [f"MLflow registry query for {registered!r} failed (try {n} of 5), retrying" for n in (1, 2, 3)]
    assert [t in logged for t in tries] == [n <= len(expected_seen) for n in (1, 2, 3)]


def test_a_refused_token_fails_at_once(through_proxy, registered):
    """403 from an auth gateway is a configuration error: one request, then an error event."""
    through_proxy.require_bearer = "tok-someone-else"
    payload = _first_event(_trigger(registered))
    assert payload["status"] == "error"
    assert payload["model_version"] is None
    assert payload["message"].startswith(f"MLflow registry query for {registered!r} failed: ")
    assert "403" in payload["message"]
    assert [r.fault for r in through_proxy.seen] == ["forbidden"]  # not retried
