"""Feast's MLflow request-header plugin is loaded only once Feast is in use (``_compat/mlflow_headers``).

Each case runs in a fresh interpreter (MLflow loads its plugins once per process) against the
real ``mlflow server``: a request through the provider's hook must not import Feast, and must
carry Feast's header as soon as Feast's own token scope sets one; MLflow's own client, and the
hook outside the gate, still load the plugin (which imports all of Feast) on the first request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.integration.mlflow.conftest import mlflow_conn_json

pytestmark = pytest.mark.integration


_HOOK = """
import json, sys, time
from airflow_mlops_provider import _compat
if GATE_CLOSED:
    real = _compat.installed_version
    _compat.installed_version = lambda d: "0.68.0" if d == "feast" else real(d)
from airflow_mlops_provider.hooks.mlflow import MlflowHook

client = MlflowHook().client
started = time.monotonic()
client.search_experiments(max_results=1)  # the process's first request
first = time.monotonic() - started
out = {"feast_imported": "feast" in sys.modules, "first_request_s": round(first, 2)}
from mlflow.tracking.request_header.registry import resolve_request_headers

out["headers_before"] = sorted(resolve_request_headers())
import feast.infra.data_sources.mlflow.auth as auth  # Feast in use, e.g. an MLflow data source

with auth.mlflow_token_scope("feast-token-123"):
    out["authorization_in_scope"] = resolve_request_headers().get("Authorization")
    client.search_experiments(max_results=1)  # a real request with Feast's header
out["authorization_after"] = resolve_request_headers().get("Authorization")
print("RESULT " + json.dumps(out))
"""

_PLAIN = """
import json, sys, time
from mlflow import MlflowClient

started = time.monotonic()
MlflowClient(URL).search_experiments(max_results=1)
print("RESULT " + json.dumps({"feast_imported": "feast" in sys.modules, "first_request_s": round(time.monotonic() - started, 2)}))
"""


def _run(code: str, env: dict[str, str]) -> dict:
    import os

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture
def conn_env(mlflow_server) -> dict[str, str]:
    return {"AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_conn_json(mlflow_server.url, token=None)}


def test_the_hooks_first_request_does_not_import_feast_and_feasts_header_still_flows(conn_env):
    out = _run(_HOOK.replace("GATE_CLOSED", "False"), conn_env)
    print(f"first request through the hook: {out['first_request_s']} s, Feast not imported")
    assert out["feast_imported"] is False
    assert out["headers_before"] == ["User-Agent", "X-MLflow-Client-Version"]
    assert out["authorization_in_scope"] == "Bearer feast-token-123"
    assert out["authorization_after"] is None


def test_outside_the_gate_and_in_mlflows_own_client_the_plugin_loads_on_the_first_request(
    conn_env, mlflow_server
):
    closed = _run(_HOOK.replace("GATE_CLOSED", "True"), conn_env)
    plain = _run(_PLAIN.replace("URL", repr(mlflow_server.url)), {})
    print(
        f"first request, plugin loaded: hook outside the gate {closed['first_request_s']} s, plain client {plain['first_request_s']} s"
    )
    assert closed["feast_imported"] is True
    assert plain["feast_imported"] is True
    # the same header behaviour either way
    assert closed["authorization_in_scope"] == "Bearer feast-token-123"
    assert closed["authorization_after"] is None
