"""Helpers for the GpuDockerOperator unit tests (no Docker engine needed)."""

from __future__ import annotations

import types
from typing import Any


def context(dag_id: str = "d", task_id: str = "t", run_id: str = "r", map_index: int = -1) -> dict[str, Any]:
    ti = types.SimpleNamespace(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=1,
        xcom_push=lambda **_: None,
    )
    return {"ti": ti}
