"""Checkpoint and resume: what a trainer leaves in ``$MLOPS_CHECKPOINT_DIR`` is handed back on the next try.

- :mod:`~airflow_mlops_provider.checkpoints.settings`: the shared operator arguments and where a
  checkpoint lives (``<uri>/<dag_id>/<run_id>/<task_id>/<map_index>/``, or ``.../trials/<trial_id>/``);
- :mod:`~airflow_mlops_provider.checkpoints.store`: local paths and ``s3://`` (boto3's transfer manager);
- :mod:`~airflow_mlops_provider.checkpoints.sync`: atomic, incremental uploads with a manifest
  written last, and restores that never take a half-written checkpoint;
- :mod:`~airflow_mlops_provider.checkpoints.session`: the worker's lifecycle (Docker, local,
  Python trials);
- :mod:`~airflow_mlops_provider.checkpoints.kubernetes`: an init container and a native sidecar
  (:mod:`~airflow_mlops_provider.checkpoints.sidecar` is what they run).

``store``, ``sync`` and ``sidecar`` import only the standard library (boto3 inside functions): they also run
inside pods whose image does not have this package.
"""

from __future__ import annotations
