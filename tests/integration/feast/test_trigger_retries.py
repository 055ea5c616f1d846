"""The freshness trigger retries transient errors and fails at once on others (real repos, real locks).

The transient errors are real ones: another process holds the registry lock, so the first checks
time out waiting for it, and the next check after that process ends succeeds; a Redis online
store whose server comes up only after a first materialization failed to reach it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from datetime import timedelta

import pytest

from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.triggers.feast import FeastFeatureFreshnessTrigger
from tests.conftest import REPO_ROOT
from tests.support.feast_repo import create_feature_repo

pytestmark = pytest.mark.integration

_HOLDER = """
import sys
import time
from pathlib import Path
from airflow_mlops_provider.file_locks import try_lock_fd
fd = try_lock_fd(Path(sys.argv[1]))
print("held" if fd is not None else "busy", flush=True)
sys.stdin.readline()  # hold until the test writes a line or closes stdin
"""


@pytest.fixture
def materialized(monkeypatch, tmp_path):
    """A one-view repo, applied and materialized over its data window (conn ``feast_default``)."""
    repo = create_feature_repo(tmp_path / "repo", rows=100, n_views=1, n_entities=10)
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", repo.connection_json())
    hook = FeastHook()
    hook.apply()
    hook.materialize(None, repo.start, repo.end)
    return repo


def _trigger(repo, **kwargs) -> FeastFeatureFreshnessTrigger:
    return FeastFeatureFreshnessTrigger(
        feast_conn_id="feast_default",
        max_staleness_seconds=3600,
        poke_interval=0.2,
        as_of=(repo.end + timedelta(minutes=5)).isoformat(),
        **kwargs,
    )


@pytest.fixture
def checks(monkeypatch):
    """Each check the trigger runs: the feature view, and the error it raised (None: it answered)."""
    seen: list[tuple[str, str | None]] = []
    real_check = FeastFeatureFreshnessTrigger._check

    def recorded(self, hook):
        try:
            result = real_check(self, hook)
        except Exception as err:
            seen.append((self.feature_view, type(err).__name__))
            raise
        seen.append((self.feature_view, None))
        return result

    monkeypatch.setattr(FeastFeatureFreshnessTrigger, "_check", recorded)
    return seen


def test_a_held_registry_lock_is_retried_until_it_is_released(materialized, checks, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(materialized.registry_path.with_name("registry.lock"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        trigger = _trigger(materialized, feature_view="fv_0", lock_timeout=0.3)

        async def scenario():
            events = trigger.run()
            first = asyncio.ensure_future(events.__anext__())
            while not checks:  # wait for the first check to time out on the lock
                assert not first.done(), first.result().payload
                await asyncio.sleep(0.05)
            holder.communicate("release\n", timeout=30)  # the holder exits; the kernel drops its lock
            event = await asyncio.wait_for(first, timeout=60)
            await events.aclose()
            return event.payload

        payload = asyncio.run(scenario())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert payload["status"] == "success", payload
    assert payload["most_recent_end_time"] == materialized.end.isoformat()
    assert checks[-1] == ("fv_0", None)
    assert checks[:-1]
    assert all(check == ("fv_0", "FeastLockTimeoutError") for check in checks[:-1])
    assert (
        "Feast freshness check of feature view 'fv_0' failed (try 1 of 5), retrying: "
        "FeastLockTimeoutError: Timed out after 0 s waiting for the Feast registry lock "
    ) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("feature_view", "conn_extra", "message"),
    [
        pytest.param(
            "nope",
            None,
            "Feature view 'nope': FeatureStoreError: Unknown feature view(s) 'nope' in Feast project "
            "'mlops_test'; known feature views: fv_0",
            id="unknown-view",
        ),
        pytest.param(
            "fv_0",
            {"repo_path": "/nonexistent/feature-repo"},
            "Feature view 'fv_0': AirflowFailException: Feast connection 'feast_default': repo_path "
            "'/nonexistent/feature-repo' is not a directory",
            id="bad-connection",
        ),
    ],
)
def test_a_non_transient_error_fails_at_once(
    monkeypatch, materialized, checks, capsys, feature_view, conn_extra, message
):
    if conn_extra is not None:
        monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", materialized.connection_json(**conn_extra))

    async def first_event():
        async for event in _trigger(materialized, feature_view=feature_view).run():
            return event.payload
        return None

    payload = asyncio.run(first_event())
    assert payload == {"status": "error", "message": message}
    assert len(checks) == 1  # one check, no retry
    assert "retrying" not in capsys.readouterr().out


def test_a_redis_store_that_comes_up_late_is_retried(monkeypatch, tmp_path):
    """The hook's predicate with the retry helper, on a real Redis server started after a failed try."""
    import threading

    from airflow_mlops_provider.triggers import _retry
    from tests.support import redis_server
    from tests.support.ports import free_port

    port = free_port()
    repo = create_feature_repo(
        tmp_path / "repo",
        project="late_redis",
        rows=200,
        n_views=1,
        n_entities=20,
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{port}",
    )
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", repo.connection_json())
    hook = FeastHook()
    hook.apply()
    failures: list[BaseException] = []
    failed = threading.Event()

    def materialize():
        try:
            return hook.materialize(None, repo.start, repo.end)
        except Exception as err:
            failures.append(err)
            failed.set()
            raise

    monkeypatch.setattr(redis_server, "free_port", lambda: port)
    started = []

    def start_after_the_first_failure():
        if failed.wait(120):
            started.append(redis_server.start_redis_server())

    thread = threading.Thread(target=start_after_the_first_failure)
    thread.start()
    try:
        results = asyncio.run(
            _retry.call_in_thread_with_retries(
                materialize,
                is_transient=FeastHook.is_transient_error,
                log=logging.getLogger(__name__),
                what="m",
            )
        )
    finally:
        failed.set()
        thread.join()
        for server in started:
            server.stop()
    (refused,) = failures
    assert type(refused.__cause__).__name__ == "ConnectionError", repr(refused.__cause__)
    assert FeastHook.is_transient_error(refused)
    assert [r.rows for r in results] == [len(repo.expected_latest("fv_0"))]
