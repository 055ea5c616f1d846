"""``GpuKubernetesPodOperator``: KubernetesPodOperator that speaks the provider's ``Resources``.

It takes the same vocabulary as ``GpuDockerOperator`` (``image``, ``command``, ``env``,
``resources``) and turns ``resources`` into the pieces a GPU pod needs:

- requests and limits (``cpu``, ``memory``, ``nvidia.com/gpu`` or ``amd.com/gpu``);
- a required node affinity on the GPU product label (``nvidia.com/gpu.product`` by default);
- a toleration for the GPU taint (configurable);
- a memory-backed emptyDir mounted at ``/dev/shm`` (PyTorch DataLoader workers need it).

``resources``, ``command`` and ``env`` are templated, and the pod is built at execute time after
rendering, so a DAG param or a mapped trial (``.partial().expand_kwargs()``) can change them.
Everything else is KubernetesPodOperator's: the result comes from ``/airflow/xcom/return.json``
through its sidecar, deferrable mode hands the wait to its trigger, the pod is deleted when the
task finishes or is killed, and its labels identify dag, task, run, map index and try.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import convert_env_vars
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import (
    Resources,
    build_gpu_node_affinity,
    build_gpu_tolerations,
    build_k8s_resource_requirements,
    build_shm_volume,
)
from airflow_mlops_provider.operators._common import (
    ResourcesPartialMixin,
    contains_template,
    env_as_strings,
    resources_for_execute,
    resources_for_init,
    validate_command,
    validate_env,
    validate_image,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

__all__ = ["MANAGED_BY_LABEL", "GpuKubernetesPodOperator"]

#: Label put on every pod this operator starts (besides KPO's dag_id/task_id/run_id/... labels).
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "airflow-mlops-provider"}
_SHM_VOLUME_NAME = "mlops-dshm"


def command_as_args(command: str | Sequence[Any] | None) -> list[str]:
    """
    Return ``command`` as a container's ``args`` list, the way Docker reads it.

    Docker's ``command`` replaces the image's ``CMD`` and keeps its ``ENTRYPOINT``; that is a
    pod's ``args``. A string is split like a shell would (``shlex.split``), as docker-py does.
    """
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, Sequence):
        return [str(part) for part in command]
    raise AirflowFailException(f"command must render to a string or a list of strings, got {command!r}")


def merge_required_node_affinity(
    base: k8s.V1Affinity | Mapping[str, Any] | None, gpu: k8s.V1Affinity | None
) -> k8s.V1Affinity | Mapping[str, Any] | None:
    """
    Return ``base`` with the GPU node requirement added to every required node-selector term.

    Node-selector terms are ORed and the expressions inside one term are ANDed, so the GPU
    requirement goes into each term: whatever the user allowed, it must also have the GPU.
    ``base`` is not modified.
    """
    if gpu is None:
        return base
    if not base:
        return gpu
    from kubernetes.client import models as k8s

    merged: k8s.V1Affinity = copy.deepcopy(base)  # type: ignore[assignment]
    gpu_required = gpu.node_affinity.required_during_scheduling_ignored_during_execution
    if merged.node_affinity is None:
        merged.node_affinity = k8s.V1NodeAffinity()
    required = merged.node_affinity.required_during_scheduling_ignored_during_execution
    if required is None or not required.node_selector_terms:
        merged.node_affinity.required_during_scheduling_ignored_during_execution = gpu_required
        return merged
    requirement = gpu_required.node_selector_terms[0].match_expressions[0]
    for term in required.node_selector_terms:
        term.match_expressions = [*(term.match_expressions or []), requirement]
    return merged


class GpuKubernetesPodOperator(ResourcesPartialMixin, KubernetesPodOperator):
    """
    Run a container in a Kubernetes pod sized by ``Resources``, GPUs included.

    Every KubernetesPodOperator argument keeps working; ``resources`` cannot be combined with
    ``container_resources``, nor ``command`` with ``arguments`` (they say the same thing).

    :param image: Container image, e.g. ``"pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"``. (templated)
    :param command: What the container runs, as in Docker: a list, or a string split like a
        shell would. It becomes the pod's ``args`` (the image's entrypoint is kept; pass
        ``cmds=`` to replace it). (templated)
    :param env: Environment variables as a dict; values are turned into strings. Applied before
        ``env_vars``, so ``env_vars`` wins on a clash. (templated)
    :param resources: A ``Resources``, its dict or its JSON text (what ``expand_kwargs`` and DAG
        params carry). Validated when the DAG is parsed if static, else after rendering. (templated)
    :param gpu_type_label: Node label that holds the GPU product for ``gpu_type``; defaults to
        ``nvidia.com/gpu.product`` (NVIDIA GPU feature discovery) or ``amd.com/gpu.product-name``.
    :param gpu_tolerations: Tolerations added when the pod asks for GPUs, as dicts such as
        ``{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}`` (the
        default, with the vendor's resource name as key). ``[]`` adds none.
    :param do_xcom_push: Return the JSON in ``/airflow/xcom/return.json`` as the task's XCom
        (KubernetesPodOperator's sidecar reads it). Defaults to True.
    :param deferrable: Wait for the pod in the triggerer. Defaults to
        ``[operators] default_deferrable``, read when the operator is created.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        "command",
        "env",
        "compute_resources",
    )
    template_fields_renderers = {
        **KubernetesPodOperator.template_fields_renderers,
        "env": "json",
        "compute_resources": "json",
    }

    def __init__(
        self,
        *,
        image: str,
        command: str | list[str] | None = None,
        env: dict[str, Any] | None = None,
        resources: Resources | dict[str, Any] | str | None = None,
        gpu_type_label: str | None = None,
        gpu_tolerations: list[Any] | None = None,
        do_xcom_push: bool = True,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        validate_image(image)
        validate_command(command)
        validate_env(env)
        if resources is not None and kwargs.get("container_resources") is not None:
            raise ValueError(
                "resources and container_resources both set the pod's requests and limits; "
                f"pass only one, got resources={resources!r}"
            )
        if command is not None and kwargs.get("arguments"):
            raise ValueError(
                "command and arguments both set the container's args; pass only one, "
                f"got command={command!r} and arguments={kwargs['arguments']!r}"
            )
        if gpu_type_label is not None and (not isinstance(gpu_type_label, str) or not gpu_type_label.strip()):
            raise ValueError(f"gpu_type_label must be a node label key, got {gpu_type_label!r}")
        # Checks the shape now (a ValueError names the bad item); GPU-less pods get none anyway.
        build_gpu_tolerations(Resources(gpus=1), gpu_tolerations)
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        super().__init__(image=image, do_xcom_push=do_xcom_push, deferrable=deferrable, **kwargs)
        self.command = command
        self.env = env
        self.compute_resources = resources_for_init(resources)
        self.gpu_type_label = gpu_type_label
        self.gpu_tolerations = gpu_tolerations

    # -- the pod ----------------------------------------------------------------------------

    def rendered_resources(self) -> Resources:
        """Return ``resources`` after rendering; raise ``AirflowFailException`` if invalid."""
        if contains_template(self.compute_resources):
            raise AirflowFailException(
                f"resources still holds a template; render it first, got {self.compute_resources!r}"
            )
        return resources_for_execute(self.compute_resources)

    @contextmanager
    def _gpu_pod_fields(self) -> Iterator[Resources]:
        """
        Lay ``resources``, ``command`` and ``env`` over KPO's fields while the pod is built.

        The rendered values of KPO's own fields are restored afterwards, so building the pod
        twice (KPO does on reattach) gives the same pod.
        """
        from kubernetes.client import models as k8s

        validate_image(self.image)
        res = self.rendered_resources()
        names = (
            "container_resources",
            "affinity",
            "tolerations",
            "volumes",
            "volume_mounts",
            "arguments",
            "env_vars",
            "labels",
        )
        saved = {name: getattr(self, name) for name in names}
        try:
            if self.compute_resources is not None:
                self.container_resources = build_k8s_resource_requirements(res)
            self.affinity = merge_required_node_affinity(
                self.affinity, build_gpu_node_affinity(res, self.gpu_type_label)
            )
            try:
                gpu_tolerations = build_gpu_tolerations(res, self.gpu_tolerations)
            except ValueError as err:
                raise AirflowFailException(str(err)) from err
            self.tolerations = [*self.tolerations, *(t for t in gpu_tolerations if t not in self.tolerations)]
            shm = build_shm_volume(res, volume_name=_SHM_VOLUME_NAME)
            if shm is not None:
                self.volumes = [*self.volumes, shm[0]]
                self.volume_mounts = [*self.volume_mounts, shm[1]]
            if self.command is not None:
                self.arguments = command_as_args(self.command)
            if self.env:
                env = [k8s.V1EnvVar(name=k, value=v) for k, v in env_as_strings(self.env).items()]
                self.env_vars = [*env, *convert_env_vars(self.env_vars or [])]
            self.labels = {**MANAGED_BY_LABEL, **(self.labels or {})}
            yield res
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """Return the V1Pod for this task, built from the rendered ``resources``, ``command`` and ``env``."""
        with self._gpu_pod_fields() as res:
            pod = super().build_pod_request_obj(context, dry_run=dry_run)
        self.log.info("Pod %s asks for %s", pod.metadata.name, res.to_dict() or "no explicit resources")
        return pod
