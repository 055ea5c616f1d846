"""Container trials: every trial of a sweep is one container (Docker, Kubernetes) or process (local).

The same sweep as Python trials (``plan_sweep`` and ``select_best_trial``); only the middle task
changes::

    batches = plan_sweep()
    results = container_trials(
        task_id="train",
        batches=batches,
        image="registry.example.com/train:1.4",
        command=["python", "train.py", "--lr", "{{ trial.hparams.lr }}"],
    )
    select_best_trial(results, batches)

Each mapped task runs its batch of trials one after the other, one container each, through
:func:`airflow_mlops_provider.sweeps.runner.run_batch` (MLflow tracking, reuse on retry,
progress). What a trial's container gets:

- ``$MLOPS_TRIAL``: the trial as JSON (``{"trial_id", "hparams", "resources"?}``) and
  ``$MLOPS_TRIAL_ID``; with tracking also ``$MLFLOW_RUN_ID``, ``$MLFLOW_TRACKING_URI`` and
  ``$MLFLOW_EXPERIMENT_ID`` (its child run; the container needs no MLflow client, but may log to it);
- in a halving sweep, ``$MLOPS_BUDGET``: its rung's budget (also ``trial.budget``, ``trial.rung``;
  an adaptive sweep's trial has ``trial.round``);
- ``{{ trial }}`` in ``image``, ``command``, ``env`` and the runtime's templated arguments,
  e.g. ``"{{ trial.hparams.lr }}"`` (besides the whole task context);
- the trial's ``resources`` (from the search space's ``resources`` key or ``gpus_per_trial``),
  else this operator's ``resources``: its limits, GPUs and ``/dev/shm``.

It writes its metrics to ``$MLOPS_RESULT_FILE`` (``/airflow/xcom/return.json`` in containers):
a JSON object of numbers, plus ``"outputs"`` for anything else. A container that exits non-zero
(an OOM kill included), writes no result or a malformed one is a failed trial, with its reason
and last output lines; the batch goes on. A configuration error (a bad image or resources after
rendering) fails the task; trouble around the trial (the engine or the cluster) lets Airflow retry it.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider._compat.airflow import nested_execute
from airflow_mlops_provider.checkpoints.settings import CheckpointOptions, trial_prefix
from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.compute.quantities import format_k8s_quantity
from airflow_mlops_provider.operators._common import (
    ERROR_TAIL_LINES,
    RESULT_FILE,
    RESULT_FILE_ENV,
    ResourcesPartialMixin,
    deterministic_name,
    rendered_env,
    resources_for_init,
    task_identity,
)
from airflow_mlops_provider.operators.container import container_operator, resolve_runtime
from airflow_mlops_provider.sweeps.container_args import (
    BUDGET_ENV,
    DOCKER_TRIAL_LABEL,
    KUBERNETES_TRIAL_LABEL,
    RUNTIME_KWARGS,
    TRIAL_ENV,
    TRIAL_ID_ENV,
    check_arguments,
    check_reserved_env,
    check_trials,
)
from airflow_mlops_provider.sweeps.records import TrialFailure, TrialResultError, split_result
from airflow_mlops_provider.sweeps.runner import run_batch, trials_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_mlops_provider.exceptions import ContainerFailedError

__all__ = ["TRIAL_ENV", "TRIAL_ID_ENV", "ContainerTrialOperator", "container_trials"]

_OOM_EXIT_CODE = 137  # 128 + SIGKILL: what the kernel's OOM killer leaves


@functools.cache
def trial_operator_class(runtime: str) -> type[BaseOperator]:
    """
    Return the class that runs one trial: the runtime's operator, whose ``log`` also keeps the output's tail.

    The runtime operators log each output line as ``log.info("%s", line)`` (the container's
    stream, or the local process's through ``SubprocessHook``); the tail is what a failed trial's
    record shows when the error itself carries none (a malformed result, a missing one).
    """
    base = container_operator(runtime)

    class _OutputTail:
        _trial_log: Any = None

        @property
        def log(self) -> Any:
            return self._trial_log if self._trial_log is not None else super().log  # type: ignore[misc]

    namespace = {
        "__module__": __name__,
        "__doc__": f"``{base.__name__}`` that keeps its output's last lines.",
    }
    return type(f"Trial{base.__name__}", (_OutputTail, base), namespace)


def _failure_reason(err: ContainerFailedError, resources: Resources) -> str:
    reason = str(err).split("\n", 1)[0]
    if err.oom_killed:
        limit = (
            f"its memory limit is {format_k8s_quantity(resources.memory)}"
            if resources.memory
            else "no limit set"
        )
        return f"{reason}; {limit}"
    if err.oom_killed is None and err.exit_code == _OOM_EXIT_CODE:
        limit = (
            f"its memory limit is {format_k8s_quantity(resources.memory)}"
            if resources.memory
            else "it has no memory limit"
        )
        reason += f" (killed by SIGKILL: most likely out of memory, {limit})"
    return reason


class ContainerTrialOperator(ResourcesPartialMixin, BaseOperator):
    """
    Run a batch of sweep trials in turn, one container (or local process) each; return their records.

    Expand it with the batches of ``plan_sweep`` (:func:`container_trials` does), or give
    ``trials`` directly. See the module docstring for what each trial's container receives.

    :param image: The image of every trial. (templated per trial, with ``trial``)
    :param command: The command, a list or a string. (templated per trial, with ``trial``)
    :param env: Environment variables of every trial, besides ``MLOPS_TRIAL`` and
        ``MLOPS_TRIAL_ID``. (templated per trial, with ``trial``)
    :param resources: A ``Resources`` or its dict, for the trials that carry none of their own.
    :param runtime: ``"docker"``, ``"kubernetes"`` or ``"local"``; default ``[mlops] runtime``
        (see :func:`~airflow_mlops_provider.operators.container.container_operator`).
    :param batch: A batch reference from ``plan_sweep`` (what ``.expand_kwargs()`` passes).
    :param trials: The trials to run, instead of ``batch``.
    :param docker_kwargs: Arguments of ``GpuDockerOperator`` for every trial (``docker_url``,
        ``gpu_fallback``, ``mounts``, ...); used on the ``docker`` runtime, ignored on others.
    :param kubernetes_kwargs: Arguments of ``GpuKubernetesPodOperator`` (``namespace``,
        ``gpu_type_label``, ...); used on the ``kubernetes`` runtime. ``deferrable=True`` is refused.
    :param local_kwargs: Arguments of ``LocalProcessOperator`` (``cwd``, ``tail_lines``); used on
        the ``local`` runtime.
    :param checkpoint: Where each trial's ``$MLOPS_CHECKPOINT_DIR`` is kept, per ``trial_id`` (a
        retry and the next rung of halving resume it); with ``checkpoint_interval``,
        ``checkpoint_max_bytes`` and ``checkpoint_conn_id`` as on the container operators, and
        the Kubernetes-only ``checkpoint_sync_image`` in ``kubernetes_kwargs``. (templated per trial)
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e2d9f3"

    def __init__(
        self,
        *,
        image: str | None = None,
        command: str | list[str] | None = None,
        env: Mapping[str, Any] | None = None,
        resources: Resources | Mapping[str, Any] | str | None = None,
        runtime: str | None = None,
        batch: Mapping[str, Any] | None = None,
        trials: Sequence[Mapping[str, Any]] | None = None,
        docker_kwargs: Mapping[str, Any] | None = None,
        kubernetes_kwargs: Mapping[str, Any] | None = None,
        local_kwargs: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
        checkpoint_interval: float | None = None,
        checkpoint_max_bytes: int | str | None = None,
        checkpoint_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.checkpoint_options = CheckpointOptions.from_args(
            checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval,
            checkpoint_max_bytes=checkpoint_max_bytes,
            checkpoint_conn_id=checkpoint_conn_id,
        )
        super().__init__(**kwargs)
        self.runtime = resolve_runtime(runtime)
        given = {"docker": docker_kwargs, "kubernetes": kubernetes_kwargs, "local": local_kwargs}
        given_kwargs = {RUNTIME_KWARGS[rt]: value for rt, value in given.items()}
        self.runtime_kwargs = check_arguments(
            self.runtime,
            {"image": image, "command": command, "env": env, "resources": resources, **given_kwargs},
            partial=False,
        )
        ignored = [RUNTIME_KWARGS[rt] for rt, value in given.items() if rt != self.runtime and value]
        if ignored:
            self.log.debug("Runtime is %s; ignoring %s", self.runtime, ", ".join(ignored))
        if trials is not None and batch is not None:
            raise ValueError(f"pass batch or trials, not both, got batch={batch!r} and trials={trials!r}")
        self.image = image
        self.command = command
        self.env = env
        self.compute_resources = resources_for_init(resources)
        self.batch = batch
        self.trials = check_trials(trials) if trials is not None else None
        self._running: BaseOperator | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``BaseOperator.partial``, with the static arguments checked (and the runtime resolved) at parse time."""
        runtime = resolve_runtime(kwargs.get("runtime"))
        check_arguments(runtime, kwargs, partial=True)
        CheckpointOptions.from_kwargs(kwargs)
        return super().partial(**{**kwargs, "runtime": runtime})

    # -- execute --------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]]:
        if self.batch is not None:
            trials = trials_of(self.batch, context)
        elif self.trials is not None:
            trials = self.trials
        else:
            raise AirflowFailException(
                f"{self.task_id} needs 'batch' (from plan_sweep) or 'trials', got neither"
            )
        cls = trial_operator_class(self.runtime)
        identity = task_identity(context)
        for trial in trials:  # every trial's arguments are checked before the first one runs
            self._trial_operator(cls, trial, identity)
        self.log.info("Running %d trial(s) on the %s runtime, one after the other", len(trials), self.runtime)
        run_one = functools.partial(self._run_one, cls, context, identity)
        return run_batch(run_one, trials=trials, context=context, log=self.log, ref=self.batch)

    def _trial_operator(
        self, cls: type[BaseOperator], trial: Mapping[str, Any], identity: Mapping[str, str]
    ) -> Any:
        """Return the runtime operator of one trial (not rendered yet)."""
        tid = str(trial["trial_id"])
        kwargs = dict(self.runtime_kwargs)
        if self.runtime == "docker":
            # The task instance's name plus the trial: a retry after a dead worker reattaches to
            # the container of the trial it was running, and no two trials share one.
            kwargs["container_name"] = f"{deterministic_name(identity, max_length=50)}-{tid[:12]}"
            labels = kwargs.get("labels") or {}
            labels = dict.fromkeys(labels, "") if isinstance(labels, list) else dict(labels)
            kwargs["labels"] = {**labels, DOCKER_TRIAL_LABEL: tid}
        elif self.runtime == "kubernetes":
            # The trial label is part of the selector a retry uses to find its pod again.
            kwargs["labels"] = {**dict(kwargs.get("labels") or {}), KUBERNETES_TRIAL_LABEL: tid}
            kwargs["name"] = f"trial-{tid[:12]}-{self.task_id}"
            kwargs["deferrable"] = False
        if self.checkpoint_options != CheckpointOptions():
            kwargs.update(
                self.checkpoint_options.as_kwargs(),
                checkpoint_prefix=trial_prefix(identity["dag_id"], identity["run_id"], tid),
            )
        resources = trial.get("resources") or self.compute_resources
        # The trial's operator has no DAG: it renders as this task does (native or text).
        native = self.render_template_as_native_obj
        if native is None:
            native = bool(self.dag.render_template_as_native_obj) if self.has_dag() else False
        try:
            return cls(
                task_id=self.task_id,
                image=self.image,
                command=self.command,
                env=self.env,
                resources=resources,
                return_result_file=True,
                render_template_as_native_obj=native,
                **kwargs,
            )
        except ValueError as err:
            raise AirflowFailException(f"trial {tid} (resources={resources!r}): {err}") from err

    def _run_one(
        self,
        cls: type[BaseOperator],
        context: Context,
        identity: Mapping[str, str],
        trial: Mapping[str, Any],
        extra_env: Mapping[str, str],
    ) -> Any:
        """Run one trial's container to its end and return its result; raise ``TrialFailure`` when the trial failed."""
        from airflow_mlops_provider.exceptions import ContainerFailedError, ResultFileError
        from airflow_mlops_provider.hooks.subprocess import TailingLog

        tid = str(trial["trial_id"])
        inner = self._trial_operator(cls, trial, identity)
        inner.render_template_fields({**context, "trial": dict(trial)}, jinja_env=self.get_template_env())
        env = rendered_env(inner.env)  # type: ignore[attr-defined]
        try:
            check_reserved_env(env)
        except ValueError as err:
            raise AirflowFailException(f"Invalid env after rendering: {err}") from err
        ours = {TRIAL_ENV: json.dumps(dict(trial), sort_keys=True), TRIAL_ID_ENV: tid, **extra_env}
        if trial.get("budget") is not None:
            ours[BUDGET_ENV] = str(trial["budget"])
        overridden = sorted(set(env) & set(ours))
        if overridden:
            self.log.info("Trial %s: tracking sets %s over the values given in env", tid, overridden)
        inner.env = {**env, **ours}  # type: ignore[attr-defined]
        output: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        inner._trial_log = TailingLog(inner.log, output)  # type: ignore[attr-defined]

        def tail() -> list[str]:
            return [line for chunk in output for line in chunk.splitlines()][-ERROR_TAIL_LINES:]

        self._running = inner
        try:
            with nested_execute(inner):
                result = inner.execute(context)
        except ResultFileError as err:
            raise TrialFailure(str(err), tail=tail()) from err
        except ContainerFailedError as err:
            resources = inner.compute_resources  # type: ignore[attr-defined]
            reason = _failure_reason(err, Resources.coerce(resources) if resources else Resources())
            raise TrialFailure(reason, tail=err.logs.splitlines() or tail()) from err
        finally:
            self._running = None
        if result is None:
            raise TrialFailure(
                f"trial {tid} wrote no result: nothing at ${RESULT_FILE_ENV} ({RESULT_FILE} in a container)",
                tail=tail(),
            )
        try:
            split_result(result, source=f"trial {tid}")
        except TrialResultError as err:
            raise TrialFailure(str(err), tail=tail()) from err
        return result

    def on_kill(self) -> None:
        """Stop the trial running now: its operator removes the container, deletes the pod or ends the process."""
        running = self._running
        if running is not None:
            running.on_kill()


def container_trials(*, task_id: str, batches: Any, runtime: str | None = None, **kwargs: Any) -> Any:
    """
    Return the output of the mapped ``ContainerTrialOperator`` that runs the batches of ``plan_sweep``.

    ``ContainerTrialOperator.partial(task_id=..., runtime=..., **kwargs).expand_kwargs(batches)``;
    its output (an ``XComArg``: one list of records per batch) feeds ``select_best_trial``.

    :param task_id: The trial task's id.
    :param batches: ``plan_sweep()``'s output (or a list of ``{"trials": [...]}``).
    :param runtime: ``"docker"``, ``"kubernetes"`` or ``"local"``; default ``[mlops] runtime``.
    :param kwargs: ``ContainerTrialOperator`` and ``BaseOperator`` arguments (``image``,
        ``command``, ``env``, ``resources``, ``docker_kwargs``, ``retries``, ``pool``, ...).
    """
    mapped = ContainerTrialOperator.partial(task_id=task_id, runtime=runtime, **kwargs).expand_kwargs(batches)
    return mapped.output
