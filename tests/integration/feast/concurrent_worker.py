"""One of two processes that apply and materialize the same repo at the same time.

Usage: python concurrent_worker.py MODE FEATURE_VIEW ITERATIONS GO_FILE
MODE ``hook`` uses FeastHook (registry lock); ``plain`` uses FeatureStore directly (for comparison).
The connection comes from AIRFLOW_CONN_FEAST_DEFAULT; the repo path from its extra.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


def main() -> None:
    mode, view, iterations, go_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    repo_path = json.loads(os.environ["AIRFLOW_CONN_FEAST_DEFAULT"])["extra"]["repo_path"]
    from airflow_mlops_provider.hooks.feast import FeastHook

    hook = FeastHook()
    hook.store  # noqa: B018 - import feast and build the store before the start line
    if mode == "plain":
        from feast import FeatureStore

        store = FeatureStore(repo_path=repo_path)
    (go_file.parent / f"ready-{view}").touch()
    while not go_file.exists():
        time.sleep(0.01)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(iterations):
        lower, upper = start + timedelta(hours=i), start + timedelta(hours=i + 1)
        if mode == "hook":
            hook.apply()
            hook.materialize([view], lower, upper)
        else:
            store.materialize(lower, upper, feature_views=[view])
    print(json.dumps({"view": view, "done": iterations}))


if __name__ == "__main__":
    main()
