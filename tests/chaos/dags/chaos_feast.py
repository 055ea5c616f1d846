"""Feast DAGs of the chaos suite: one interval materialized by runs at once, and by a killed try.

Both DAGs take the Feast connection and the window from the run's conf (``params.conn``,
``params.start``, ``params.end``), so every repetition of scenario 4 gets a repo (and a Feast
project, so a part of the Redis keyspace) of its own:

- ``chaos_feast_overlap`` applies the repo (``FeastApplyOperator``), then materializes the
  window. No retries: a run that needs a second try is a finding, not noise.
- ``chaos_feast_kill`` materializes the window in small online-write batches (so a SIGKILL of
  the task process lands inside the write), with retries and a short ``retry_delay``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_mlops_provider.operators.feast import FeastApplyOperator, FeastMaterializeOperator

PARAMS = {
    "conn": Param("feast_chaos_overlap", type="string"),
    "start": Param("2024-01-01T00:00:00+00:00", type="string"),
    "end": Param("2024-01-03T00:00:00+00:00", type="string"),
}
WINDOW = {"start_date": "{{ params.start }}", "end_date": "{{ params.end }}"}


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
        tags=["chaos"],
    )


with _dag("chaos_feast_overlap"):
    apply = FeastApplyOperator(task_id="apply", feast_conn_id="{{ params.conn }}", retries=0)
    materialize = FeastMaterializeOperator(
        task_id="materialize",
        feast_conn_id="{{ params.conn }}",
        online_write_batch_size=2000,
        retries=0,
        **WINDOW,
    )
    apply >> materialize

with _dag("chaos_feast_kill"):
    FeastMaterializeOperator(
        task_id="materialize",
        feast_conn_id="{{ params.conn }}",
        online_write_batch_size=500,
        retries=2,
        retry_delay=timedelta(seconds=2),
        **WINDOW,
    )
