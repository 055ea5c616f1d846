"""The arguments of ``ContainerTrialOperator``: their parse-time checks, and what each trial gets.

Static values are checked when the DAG file is parsed, by the checks of the runtime operators
(:mod:`airflow_mlops_provider.operators._common`) plus the ones of a batch of trials: the
runtime-specific dict (``docker_kwargs``, ``kubernetes_kwargs``, ``local_kwargs``) names only
arguments the runtime's operator takes and that are not set per trial, and ``env`` leaves the
trial's own variables alone. Every check raises ``ValueError`` naming the argument and the value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops_provider.operators._common import (
    resources_for_init,
    validate_command,
    validate_env,
    validate_image,
)
from airflow_mlops_provider.operators.container import container_operator

__all__ = [
    "DOCKER_TRIAL_LABEL",
    "KUBERNETES_TRIAL_LABEL",
    "RUNTIME_KWARGS",
    "BUDGET_ENV",
    "TRIAL_ENV",
    "TRIAL_ID_ENV",
    "check_arguments",
    "check_reserved_env",
    "check_runtime_kwargs",
    "check_trials",
]

#: The variables a trial's container receives: the trial as JSON, and its id.
TRIAL_ENV = "MLOPS_TRIAL"
TRIAL_ID_ENV = "MLOPS_TRIAL_ID"
#: Successive halving's budget of the trial's rung (epochs, steps, rows: the trial's meaning).
BUDGET_ENV = "MLOPS_BUDGET"
#: The dict of runtime-specific arguments each runtime reads.
RUNTIME_KWARGS = {"docker": "docker_kwargs", "kubernetes": "kubernetes_kwargs", "local": "local_kwargs"}
#: The label that tells a trial's container (Docker) or pod (Kubernetes) apart from its batch's others.
DOCKER_TRIAL_LABEL = "airflow-mlops.trial_id"
KUBERNETES_TRIAL_LABEL = "airflow-mlops/trial-id"
#: Arguments this operator sets on every trial's operator itself.
_OURS = (
    "task_id",
    "image",
    "command",
    "env",
    "resources",
    "return_result_file",
    "docker_kwargs",
    "kubernetes_kwargs",
)
_SET_PER_TRIAL = {"docker": ("container_name",), "kubernetes": ("name", "do_xcom_push"), "local": ()}


@functools.cache
def _init_names(cls: type) -> frozenset[str]:
    """The keyword arguments the ``__init__`` methods of ``cls`` and its bases name."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    names.discard("self")
    return frozenset(names)


def check_runtime_kwargs(runtime: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    Return the active runtime's arguments, checked against its operator.

    :param runtime: ``"docker"``, ``"kubernetes"`` or ``"local"``.
    :param given: ``docker_kwargs``, ``kubernetes_kwargs`` or ``local_kwargs``, as given.
    :raises ValueError: naming the argument when it is unknown to the runtime, set per trial by
        this operator, an argument of the trial task itself, or would defer.
    """
    name = RUNTIME_KWARGS[runtime]
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ValueError(f"{name} must be a dict of {runtime} operator arguments, got {given!r}")
    kwargs = dict(given)
    if not kwargs:
        return kwargs
    cls = container_operator(runtime)
    own = _init_names(cls) - _init_names(BaseOperator)
    problems = {
        "are set per trial by ContainerTrialOperator": [
            k for k in kwargs if k in _OURS or k in _SET_PER_TRIAL[runtime]
        ],
        "are arguments of the trial task itself; pass them to ContainerTrialOperator directly": [
            k for k in kwargs if k in _init_names(BaseOperator) and k not in _OURS
        ],
        f"are not arguments of {cls.__name__}": [
            k for k in kwargs if k not in own and k not in _init_names(BaseOperator) and k not in _OURS
        ],
    }
    for what, names in problems.items():
        if names:
            raise ValueError(f"{name} {sorted(names)} {what}, got {name}={given!r}")
    if kwargs.get("deferrable"):
        raise ValueError(
            f"{name} deferrable=True cannot run a batch of trials in one task (each trial's pod is "
            f"awaited in turn), got {name}={given!r}"
        )
    labels = kwargs.get("labels")
    if labels is not None and not isinstance(labels, (Mapping, list) if runtime == "docker" else Mapping):
        raise ValueError(f"{name} labels must be a dict (a trial's label is added to it), got {labels!r}")
    return kwargs


def check_trials(trials: Any) -> list[dict[str, Any]]:
    """Return ``trials`` as a list; raise ``ValueError`` unless each is a trial dict with ``trial_id`` and ``hparams``."""
    if isinstance(trials, (str, bytes, Mapping)) or not isinstance(trials, Sequence):
        raise ValueError(f"trials must be a list of trial dicts (see trials_from_grid), got {trials!r}")
    for trial in trials:
        if (
            not isinstance(trial, Mapping)
            or not isinstance(trial.get("trial_id"), str)
            or not isinstance(trial.get("hparams"), Mapping)
        ):
            raise ValueError(
                f"each trial must be a dict with 'trial_id' (str) and 'hparams' (dict), got {trial!r}"
            )
    return [dict(t) for t in trials]


def check_reserved_env(env: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``env`` sets a variable each trial's container gets from the trial."""
    reserved = sorted({TRIAL_ENV, TRIAL_ID_ENV, BUDGET_ENV} & set(env))
    if reserved:
        raise ValueError(f"env must not set {reserved}: each trial's container gets them, got env={env!r}")


def check_arguments(runtime: str, arguments: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    """
    Check the static arguments of a ``ContainerTrialOperator`` (parse time); return the runtime's arguments.

    :param runtime: The resolved runtime.
    :param arguments: ``image``, ``command``, ``env``, ``resources`` and the runtime's dict, as given.
    :param partial: Arguments of ``.partial()``: one left out may still come from ``.expand_kwargs()``.
    :raises ValueError: naming the argument and repeating the value.
    """
    image, command, env = arguments.get("image"), arguments.get("command"), arguments.get("env")
    if image is not None or (runtime != "local" and (not partial or "image" in arguments)):
        validate_image(image)
    if runtime == "local" and (not partial or "command" in arguments) and command in (None, "", []):
        raise ValueError(f"command must be a non-empty string or list of strings, got {command!r}")
    validate_command(command)
    validate_env(env)
    if isinstance(env, Mapping):
        check_reserved_env(env)
    resources_for_init(arguments.get("resources"))
    return check_runtime_kwargs(runtime, arguments.get(RUNTIME_KWARGS[runtime]))
