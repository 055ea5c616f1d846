"""Every use of the Airflow Task SDK's private API, in one place and behind one version gate.

``ContainerTrialOperator`` runs one runtime operator (``GpuDockerOperator``,
``GpuKubernetesPodOperator``, ``LocalProcessOperator``) per trial, inside its own ``execute``.
The Task SDK wraps every operator's ``execute`` in ``ExecutorSafeguard``
(``airflow/sdk/bases/operator.py``, ``ExecutorSafeguard.decorator``), which logs
"<Class>.execute cannot be called outside of the Task Runner!" unless its context variable
``ExecutorSafeguard.tracker`` holds the operator being executed (the task runner sets it to the
task, ``task_runner._run_execute_callable``). The only public knob, ``allow_nested_operators``,
chooses between that warning and an error; a sweep of 50 trials would log it 50 times.

:func:`nested_execute` sets the tracker to the inner operator while it runs, as the task runner
does for the task itself. Read in the Task SDK 1.2.2 (the one Airflow 3.2.2, the declared floor,
installs) and 1.3.2 (installed): ``ExecutorSafeguard.tracker`` is the same
``ContextVar("ExecutorSafeguard_sentinel")`` in both, and the wrapper compares its value with
``self``. ``GATE`` covers ``1.2.2 <= v < 1.4.0``; outside it the public path is taken: the inner
operator runs the same, and the warning is logged.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from airflow_mlops_provider._compat import VersionRange, version_gate

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import BaseOperator

__all__ = ["EXECUTOR_SAFEGUARD_GATE", "nested_execute"]

EXECUTOR_SAFEGUARD_GATE = VersionRange(
    "apache-airflow-task-sdk",
    "1.2.2",
    "1.4.0",
    "airflow.sdk.bases.operator.ExecutorSafeguard.tracker",
)


@contextlib.contextmanager
def nested_execute(operator: BaseOperator) -> Iterator[None]:
    """
    Let ``operator.execute()`` run inside another operator's ``execute`` without the nesting warning.

    :param operator: The inner operator about to be executed.
    """
    if not version_gate(EXECUTOR_SAFEGUARD_GATE):
        yield
        return
    from airflow.sdk.bases.operator import ExecutorSafeguard

    token = ExecutorSafeguard.tracker.set(operator)
    try:
        yield
    finally:
        ExecutorSafeguard.tracker.reset(token)
