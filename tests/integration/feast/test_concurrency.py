"""Two processes apply and materialize one file-registry repo at the same time.

The hook serialises registry read-modify-writes with a file lock and writes the registry
atomically; afterwards the registry parses and holds every interval both processes recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_mlops_provider.hooks.feast import FeastHook
from tests.conftest import REPO_ROOT
from tests.support.feast_repo import create_feature_repo

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("concurrent_worker.py")
ITERATIONS = 4


def _run_pair(repo, tmp_path, mode):
    go = tmp_path / f"go-{mode}"
    env = {**os.environ, "AIRFLOW_CONN_FEAST_DEFAULT": repo.connection_json(), "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, view, str(ITERATIONS), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for view in ("fv_0", "fv_1")
    ]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{v}").exists() for v in ("fv_0", "fv_1")):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    for view in ("fv_0", "fv_1"):
        (tmp_path / f"ready-{view}").unlink()
    return results


def test_two_overlapping_processes_keep_the_registry_whole(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=400, n_views=2, n_entities=20)
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", repo.connection_json())
    FeastHook().apply()

    results = _run_pair(repo, tmp_path, "hook")
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["done"] == ITERATIONS

    hook = FeastHook()
    views = {fv.name: fv for fv in hook.get_feature_views(None)}
    for name in ("fv_0", "fv_1"):
        intervals = views[name].materialization_intervals
        assert len(intervals) == ITERATIONS, f"{name} lost materialization intervals: {intervals}"
    assert not list(repo.registry_path.parent.glob(".registry.db.*")), "a temporary registry file was left"
