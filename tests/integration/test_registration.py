"""The real Airflow CLI discovers the provider and its plugin through their entry points."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import airflow_env, run_airflow

pytestmark = pytest.mark.integration


def test_airflow_providers_list_shows_the_package():
    proc = run_airflow("providers", "list", "--output", "json")
    providers = {p["package_name"]: p for p in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert "airflow-mlops-provider" in providers, sorted(providers)
    from airflow_mlops_provider import __version__

    assert providers["airflow-mlops-provider"]["version"] == __version__


def test_airflow_providers_get_lists_connection_types_and_links():
    proc = run_airflow("providers", "hooks", "--output", "json")
    hooks = {h["connection_type"]: h for h in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert hooks["mlflow"]["class"] == "airflow_mlops_provider.hooks.mlflow.MlflowHook"
    assert hooks["feast"]["class"] == "airflow_mlops_provider.hooks.feast.FeastHook"
    links = run_airflow("providers", "links", "--output", "json").stdout
    assert "airflow_mlops_provider.links.mlflow.MlflowRunLink" in links
    assert "airflow_mlops_provider.links.mlflow.MlflowModelVersionLink" in links


def test_airflow_plugins_shows_the_plugin():
    proc = run_airflow("plugins", "--output", "json")
    plugins = json.loads(proc.stdout[proc.stdout.index("[") :])
    names = {p["name"]: p for p in plugins}
    assert "mlops" in names, plugins
    assert "airflow_mlops_provider.plugins.mlops" in json.dumps(names["mlops"])


def test_provider_config_section_is_registered():
    proc = run_airflow("config", "get-value", "mlops", "runtime")
    assert proc.stdout.strip().splitlines()[-1] == "docker"


@pytest.mark.parametrize("lazy", ["True", "False"], ids=["lazy-discovery", "eager-discovery"])
def test_the_plugin_is_registered_once(lazy):
    """Through the airflow.plugins entry point only; provider info would add it a second time."""
    env = airflow_env(AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=lazy)
    proc = run_airflow("plugins", "--output", "json", env=env)
    plugins = json.loads(proc.stdout[proc.stdout.index("[") :])
    assert [p["name"] for p in plugins].count("mlops") == 1, plugins
    assert "already registered" not in proc.stdout + proc.stderr


_PROVIDERS_PROBE = """
import json
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
from airflow.sdk import Asset

def name(func):
    return f"{func.__module__}.{func.__qualname__}" if func else None

print(json.dumps({
    "core": name(ProvidersManager().asset_uri_handlers.get("mlflow-model")),
    "task_runtime": name(ProvidersManagerTaskRuntime().asset_uri_handlers.get("mlflow-model")),
    "uri": Asset(uri="mlflow-model://team%2fchurn%20model/").uri,
}))
"""


def test_providers_manager_registers_the_mlflow_model_uri_handler():
    proc = subprocess.run(
        [sys.executable, "-c", _PROVIDERS_PROBE],
        env=airflow_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    handler = "airflow_mlops_provider.assets.mlflow.sanitize_uri"
    assert seen == {"core": handler, "task_runtime": handler, "uri": "mlflow-model://team%2Fchurn%20model"}


def test_airflow_providers_triggers_lists_our_trigger_modules():
    from airflow_mlops_provider.get_provider_info import get_provider_info

    proc = run_airflow("providers", "triggers", "--output", "json")
    rows = json.loads(proc.stdout[proc.stdout.index("[") :])
    ours = {r["class"]: r["integration_name"] for r in rows if r["package_name"] == "airflow-mlops-provider"}
    listed = {m: t["integration-name"] for t in get_provider_info()["triggers"] for m in t["python-modules"]}
    assert ours == listed
    assert set(ours) >= {"airflow_mlops_provider.triggers.mlflow", "airflow_mlops_provider.triggers.feast"}
