"""Every use of the Docker provider's private API, in one place and behind one version gate.

``DockerOperator`` (``apache-airflow-providers-docker``,
``airflow/providers/docker/operators/docker.py``) has no public way to change how its container
is created: ``execute()`` pulls the image and calls the private ``_run_image()``, which makes the
temporary-directory mount and calls the private ``_run_image_with_mounts(target_mounts,
add_tmp_variable)``; that one builds the ``create_host_config`` / ``create_container`` call,
starts the container, waits for it and removes it. ``GpuDockerOperator`` needs its own container
creation (leased device requests, limits, labels, a deterministic name, the result directory) and
its own lifecycle (reattach, its ``auto_remove`` policy), so:

- ``DockerRunSeam`` overrides ``DockerOperator._run_image_with_mounts`` (the seam through which
  the public ``execute()`` reaches container creation) and hands over to the operator's own
  ``run_container(target_mounts)``;
- :func:`container_kwargs` builds the ``create_host_config`` / ``create_container`` keywords the
  way ``_run_image_with_mounts`` does, for every keyword DockerOperator passes: each is either
  passed through (``HOST_CONFIG_PASSED``, ``CONTAINER_PASSED``: upstream's expression, recorded
  as text) or deliberately replaced (``HOST_CONFIG_REPLACED``, ``CONTAINER_REPLACED``: with why);
  it reads the private ``DockerOperator._private_environment``;
- :func:`retrieved_output` calls the private ``DockerOperator._attempt_to_retrieve_result()`` for
  ``retrieve_output=True``.

Read in the provider's wheels 4.4.0 (the declared floor), 4.5.0 and 4.6.1 (installed, the newest
release): ``_run_image``, ``_run_image_with_mounts``, ``_private_environment`` and
``_attempt_to_retrieve_result`` are the same in all three. ``GATE`` covers ``4.4.0 <= v < 4.7.0``;
outside it the operator fails loudly (:class:`~airflow_mlops_provider._compat.UnsupportedVersionError`)
because no public path exists. ``tests/unit/docker/test_compat_drift.py`` parses the installed
``_run_image_with_mounts`` and fails when its keywords or expressions drift from what is recorded here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import DockerOperator

from airflow_mlops_provider._compat import VersionRange, version_gate

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONTAINER_ADDED",
    "CONTAINER_PASSED",
    "CONTAINER_REPLACED",
    "GATE",
    "HOST_CONFIG_ADDED",
    "HOST_CONFIG_PASSED",
    "HOST_CONFIG_REPLACED",
    "DockerRunSeam",
    "check_docker_provider",
    "container_kwargs",
    "retrieved_output",
]

GATE = VersionRange(
    "apache-airflow-providers-docker",
    "4.4.0",
    "4.7.0",
    "GpuDockerOperator's override of DockerOperator._run_image_with_mounts (and its use of "
    "._private_environment and ._attempt_to_retrieve_result)",
)

#: ``create_host_config`` keywords of ``DockerOperator._run_image_with_mounts`` taken over as they
#: are: keyword -> upstream's expression (``ast.unparse`` text, checked by the drift test).
HOST_CONFIG_PASSED: Mapping[str, str] = {
    # Always False upstream too: the engine must not remove the container before the operator
    # has read its exit code and result file; removal follows auto_remove in the operator.
    "auto_remove": "False",
    "mounts": "target_mounts",
    "network_mode": "self.network_mode",
    "dns": "self.dns",
    "dns_search": "self.dns_search",
    "cpu_shares": "round(self.cpus * 1024)",
    "port_bindings": "self.port_bindings",
    "cap_add": "self.cap_add",
    "extra_hosts": "self.extra_hosts",
    "privileged": "self.privileged",
    "log_config": "LogConfig(config=docker_log_config)",
    "ipc_mode": "self.ipc_mode",
    "ulimits": "self.ulimits",
}
#: ``create_host_config`` keywords replaced by ours, and why.
HOST_CONFIG_REPLACED: Mapping[str, str] = {
    "shm_size": "resources.shm_size when set (passing shm_size too is rejected at parse time)",
    "mem_limit": "resources.memory when set (passing mem_limit too is rejected at parse time)",
    "device_requests": "the leased GPU devices of resources.gpus / gpu_ids (passing "
    "device_requests too is rejected at parse time)",
}
#: ``create_host_config`` keywords DockerOperator does not pass, added by ours.
HOST_CONFIG_ADDED: Mapping[str, str] = {
    "nano_cpus": "resources.cpus as a hard CPU limit",
    "devices": "AMD GPUs (/dev/kfd, /dev/dri)",
    "group_add": "AMD GPUs (video)",
}
#: ``create_container`` keywords taken over as they are: keyword -> upstream's expression.
CONTAINER_PASSED: Mapping[str, str] = {
    "command": "self.format_command(self.command)",
    # ``self.environment`` holds env merged over environment, and MLOPS_RESULT_FILE.
    "environment": "{**env_file_vars, **self.environment, **self._private_environment}",
    "ports": "list(self.port_bindings)",
    "image": "self.image",
    "user": "self.user",
    "entrypoint": "self.format_command(self.entrypoint)",
    "working_dir": "self.working_dir",
    "tty": "self.tty",
    "hostname": "self.hostname",
}
#: ``create_container`` keywords replaced by ours, and why.
CONTAINER_REPLACED: Mapping[str, str] = {
    "name": "deterministic per task instance (container_name when given), so a retry reattaches",
    "labels": "the user's labels plus the task identity and the leased GPU ids",
    "host_config": "built from the keywords above",
}
#: ``create_container`` keywords DockerOperator does not pass, added by ours (none today).
CONTAINER_ADDED: Mapping[str, str] = {}


def check_docker_provider() -> None:
    """Fail loudly unless the installed Docker provider is one these private uses were written for."""
    version_gate(GATE, strict=True)


class DockerRunSeam(DockerOperator):
    """
    ``DockerOperator`` whose container run, reached through its public ``execute()``, is ``run_container()``.

    Subclasses implement ``run_container(target_mounts)``: create, start, follow and clean up the
    container, returning the task's XCom. Everything before it (image pull, the temporary
    directory mount and its fallback for remote engines) stays DockerOperator's.
    """

    def run_container(self, target_mounts: list[Any]) -> Any:
        """Run the container with ``target_mounts``; return the XCom."""
        raise NotImplementedError

    # Upstream: DockerOperator._run_image_with_mounts(self, target_mounts, add_tmp_variable), called
    # by DockerOperator._run_image() (4.4.0 to 4.6.1). Its first lines set or drop AIRFLOW_TMP_DIR;
    # the rest (container creation, start, wait, removal) is what run_container() replaces.
    def _run_image_with_mounts(self, target_mounts: list[Any], add_tmp_variable: bool) -> Any:
        check_docker_provider()
        if add_tmp_variable:
            self.environment["AIRFLOW_TMP_DIR"] = self.tmp_dir
        else:
            self.environment.pop("AIRFLOW_TMP_DIR", None)
        return self.run_container(target_mounts)


def container_kwargs(
    op: DockerOperator,
    *,
    name: str,
    target_mounts: list[Any],
    engine: Mapping[str, Any],
    labels: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Return ``(create_host_config keywords, create_container keywords without host_config)``.

    Built as ``DockerOperator._run_image_with_mounts`` builds them (the ``*_PASSED`` tables), with
    the ``*_REPLACED`` and ``*_ADDED`` keywords from our own arguments.

    :param op: The operator, after rendering.
    :param name: The container name.
    :param target_mounts: What ``_run_image()`` mounts (the user's mounts and maybe the tmp dir).
    :param engine: ``compute.build_docker_host_config()`` of the rendered resources and leased ids.
    :param labels: The container's labels.
    """
    from docker.types import LogConfig

    docker_log_config = {}
    if op.log_opts_max_size is not None:
        docker_log_config["max-size"] = op.log_opts_max_size
    if op.log_opts_max_file is not None:
        docker_log_config["max-file"] = op.log_opts_max_file
    env_file_vars = op.unpack_environment_variables(op.env_file) if op.env_file is not None else {}
    host_config = {
        "auto_remove": False,
        "mounts": target_mounts,
        "network_mode": op.network_mode,
        "shm_size": engine.get("shm_size", op.shm_size),
        "dns": op.dns,
        "dns_search": op.dns_search,
        "cpu_shares": round(op.cpus * 1024),
        "nano_cpus": engine.get("nano_cpus"),
        "port_bindings": op.port_bindings,
        "mem_limit": engine.get("mem_limit", op.mem_limit),
        "cap_add": op.cap_add,
        "extra_hosts": op.extra_hosts,
        "privileged": op.privileged,
        "device_requests": engine.get("device_requests", op.device_requests),
        "devices": engine.get("devices"),
        "group_add": engine.get("group_add"),
        "log_config": LogConfig(config=docker_log_config),
        "ipc_mode": op.ipc_mode,
        "ulimits": op.ulimits,
    }
    container = {
        "command": op.format_command(op.command),
        "name": name,
        # Upstream: DockerOperator.__init__ keeps private_environment in ._private_environment.
        "environment": {**env_file_vars, **op.environment, **op._private_environment},
        "ports": list(op.port_bindings),
        "image": op.image,
        "user": op.user,
        "entrypoint": op.format_command(op.entrypoint),
        "working_dir": op.working_dir,
        "tty": op.tty,
        "hostname": op.hostname,
        "labels": dict(labels),
    }
    return host_config, container


def retrieved_output(op: DockerOperator) -> Any:
    """
    Return ``retrieve_output_path``'s unpickled content, as DockerOperator returns it for ``retrieve_output``.

    Upstream: ``DockerOperator._attempt_to_retrieve_result()`` (4.4.0 to 4.6.1), which reads
    ``self.container["Id"]`` and returns None when the file cannot be read.
    """
    check_docker_provider()
    return op._attempt_to_retrieve_result()
