"""Materialize tasks of one host emit a feature view's asset event one after another.

Airflow creates the asset of a first alias event while it records the task's success, and two
tasks doing that at once fail the second one (chaos scenario 4: two runs materializing one
window of a new repo). ``FeastMaterializeOperator`` therefore holds ``asset-<view>.lock`` from
adding the event until its process exits (after the success report); another task's event of
the same view waits for that exit, other views' events do not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest

from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.operators import feast as feast_operators
from airflow_mlops_provider.operators.feast import FeastMaterializeOperator
from tests.conftest import REPO_ROOT

CONN_ID = "feast_asset_lock"
WINDOW = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))

#: Emits fv_1's event like a task does, says so, then lives until its stdin closes.
EMITTER = textwrap.dedent(
    f"""
    import sys
    from datetime import datetime, timezone
    from airflow_mlops_provider.hooks.feast import FeastHook, ViewMaterialization
    from airflow_mlops_provider.operators.feast import FeastMaterializeOperator

    class Events:
        def __getitem__(self, alias):
            return self

        def add(self, asset, extra=None):
            pass

    window = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))
    result = ViewMaterialization("fv_1", 1, *window, 0.1)
    op = FeastMaterializeOperator(task_id="earlier", feast_conn_id={CONN_ID!r})
    op._emit_asset_events({{"outlet_events": Events()}}, FeastHook({CONN_ID!r}), [result])
    print("emitted", flush=True)
    sys.stdin.readline()
    """
)


class Recorder:
    """Stands in for ``context["outlet_events"]``: when each asset's event was added."""

    def __init__(self) -> None:
        self.added: list[tuple[str, float]] = []

    def __getitem__(self, alias):
        return self

    def add(self, asset, extra=None):
        self.added.append((asset.uri, time.monotonic()))


@pytest.fixture
def repo(monkeypatch, tmp_path):
    (tmp_path / "feature_store.yaml").write_text(
        "project: lockproj\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
    )
    conn = json.dumps({"conn_type": "feast", "extra": {"repo_path": str(tmp_path)}})
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn)
    return tmp_path


@pytest.fixture
def earlier_emitter(repo):
    """A process that emitted fv_1's event and has not exited yet."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EMITTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    line = proc.stdout.readline()
    assert line.strip() == "emitted", proc.communicate(timeout=60)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def _results(*views: str) -> list:
    from airflow_mlops_provider.hooks.feast import ViewMaterialization

    return [ViewMaterialization(view, 1, *WINDOW, 0.1) for view in views]


def test_an_event_waits_until_the_earlier_emitter_of_its_view_exited(earlier_emitter):
    op = FeastMaterializeOperator(task_id="later", feast_conn_id=CONN_ID)
    events = Recorder()
    emit = threading.Thread(
        target=op._emit_asset_events,
        args=({"outlet_events": events}, FeastHook(CONN_ID), _results("fv_1", "fv_0")),
    )
    emit.start()
    time.sleep(1.5)
    assert [uri for uri, _ in events.added] == ["feast://lockproj/fv_0"], "fv_0 waited, or fv_1 did not"
    released_at = time.monotonic()
    earlier_emitter.stdin.close()
    emit.join(timeout=30)
    assert not emit.is_alive()
    assert [uri for uri, _ in events.added] == ["feast://lockproj/fv_0", "feast://lockproj/fv_1"]
    assert events.added[0][1] < released_at < events.added[1][1]


def test_after_the_wait_runs_out_the_event_is_emitted_anyway(earlier_emitter, monkeypatch, capsys):
    monkeypatch.setattr(feast_operators, "_ASSET_EMIT_WAIT_S", 0.5)
    op = FeastMaterializeOperator(task_id="later", feast_conn_id=CONN_ID)
    events = Recorder()
    op._emit_asset_events({"outlet_events": events}, FeastHook(CONN_ID), _results("fv_1"))
    assert [uri for uri, _ in events.added] == ["feast://lockproj/fv_1"]
    assert earlier_emitter.poll() is None
    logged = "".join(capsys.readouterr())  # the task SDK's structlog writes the operator's log there
    assert "Another task of this host still reports an asset event of fv_1 after 0.5 s" in logged


def test_a_process_takes_its_own_lock_again_at_once(repo):
    hook = FeastHook(CONN_ID)
    assert hook.hold_until_exit("asset-own.lock", 5)
    started = time.monotonic()
    assert FeastHook(CONN_ID).hold_until_exit("asset-own.lock", 5)
    assert time.monotonic() - started < 1
    assert (repo / "data" / "asset-own.lock").exists()


def test_sql_registries_have_no_lock(monkeypatch):
    yaml_text = (
        "project: p\nprovider: local\n"
        "registry:\n  registry_type: sql\n  path: postgresql://u@localhost/db\n"
        "online_store:\n  type: sqlite\n  path: /tmp/online.db\n"
    )
    conn = json.dumps({"conn_type": "feast", "extra": {"feature_store_yaml": yaml_text}})
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_SQL_REGISTRY", conn)
    assert FeastHook("feast_sql_registry").hold_until_exit("asset-x.lock", 5) is False
