"""MlflowModelVersionSensor defers; its trigger fires on the real server when a version appears."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_mlops_provider.sensors.mlflow import MlflowModelVersionSensor
from airflow_mlops_provider.triggers.mlflow import MlflowModelVersionTrigger
from tests.integration.mlflow.conftest import make_context

pytestmark = pytest.mark.integration


def _client(server):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def _register_later(
    server, sklearn_model, name: str, *, delay: float, alias: str | None = None
) -> threading.Thread:
    def work() -> None:
        time.sleep(delay)
        client = _client(server)
        try:
            client.create_registered_model(name)
        except Exception:
            pass  # already there
        mv = client.create_model_version(
            name, sklearn_model.source, run_id=sklearn_model.run_id, model_id=sklearn_model.model_id
        )
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_sensor_defers_with_serializable_trigger(mlflow_conn):
    name = f"defer-{uuid.uuid4().hex[:8]}"
    sensor = MlflowModelVersionSensor(
        task_id="wait", model_name=name, min_version=1, deferrable=True, poke_interval=3, timeout=60
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context(task_id="wait"))
    trigger = deferred.value.trigger
    assert isinstance(trigger, MlflowModelVersionTrigger)
    assert trigger.serialize() == (
        "airflow_mlops_provider.triggers.mlflow.MlflowModelVersionTrigger",
        {"mlflow_conn_id": "mlflow_default", "model_name": name, "alias": None, "min_version": 1,
         "poll_interval": 3.0},
    )  # fmt: skip
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == 60
    result = sensor.execute_complete(
        make_context(task_id="wait"),
        {"status": "success", "message": "ok", "model_version": {"name": name, "version": "1"}},
    )
    assert result == {"name": name, "version": "1"}


@pytest.mark.parametrize(
    ("alias", "min_version", "preexisting"),
    [(None, 1, 0), ("champion", 2, 1)],
    ids=["new-version-appears", "alias-moves-to-new-version"],
)
def test_trigger_fires_when_registered_concurrently(
    mlflow_conn, mlflow_server, sklearn_model, alias, min_version, preexisting
):
    name = f"trig-{uuid.uuid4().hex[:8]}"
    for _ in range(preexisting):
        _register_later(mlflow_server, sklearn_model, name, delay=0, alias=alias).join()
    trigger = MlflowModelVersionTrigger(
        mlflow_conn_id="mlflow_default",
        model_name=name,
        alias=alias,
        min_version=min_version,
        poll_interval=0.5,
    )

    async def first_event():
        gen = trigger.run()
        try:
            return await asyncio.wait_for(gen.__anext__(), timeout=180)
        finally:
            await gen.aclose()

    writer = _register_later(mlflow_server, sklearn_model, name, delay=1.5, alias=alias)
    event = asyncio.run(first_event())
    writer.join()
    assert event.payload["status"] == "success", event.payload
    assert event.payload["model_version"] == {
        "name": name,
        "version": str(min_version),
        "alias": alias,
        "run_id": sklearn_model.run_id,
    }


def test_trigger_loop_is_not_blocked(mlflow_conn, mlflow_server):
    """Other coroutines keep running while the trigger polls (the client runs in a thread)."""
    name = f"never-{uuid.uuid4().hex[:8]}"
    trigger = MlflowModelVersionTrigger(
        mlflow_conn_id="mlflow_default", model_name=name, min_version=1, poll_interval=0.2
    )

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        gen = trigger.run()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(gen.__anext__(), timeout=3)
        tick_task.cancel()
        return ticks

    assert asyncio.run(scenario()) > 20


def test_sensor_pokes_without_deferring(mlflow_conn, mlflow_server, sklearn_model):
    name = f"poke-{uuid.uuid4().hex[:8]}"
    _register_later(mlflow_server, sklearn_model, name, delay=0, alias="champion").join()
    sensor = MlflowModelVersionSensor(task_id="wait", model_name=name, alias="champion", deferrable=False)
    ctx = make_context(task_id="wait")
    result = sensor.poke(ctx)
    assert result.is_done
    assert result.xcom_value == {
        "name": name,
        "version": "1",
        "alias": "champion",
        "run_id": sklearn_model.run_id,
    }
    assert ctx["ti"].xcom["mlflow_urls"]["model_version"] == f"{mlflow_server.url}/#/models/{name}/versions/1"
