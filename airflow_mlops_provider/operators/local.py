"""``LocalProcessOperator``: the container vocabulary, run as a plain process on the worker.

This is the runtime of last resort: the demo uses it when no Docker engine answers, so a
fresh machine with only Python can still run the example pipeline. It keeps the contract of
the container runtimes (``operators/_common.py``: ``command``, ``env`` over the worker's
environment, the result file returned as XCom, live logs, ``ContainerFailedError`` with the
last output lines on a non-zero exit, the same configuration errors, the process group killed
when the task is killed) but it isolates nothing: ``image`` is checked and ignored,
``resources`` are validated and not enforced, and GPUs are whatever the worker has.

The process runs through Airflow's ``SubprocessHook`` (the one ``BashOperator`` uses: its own
process group, output lines logged live, ``send_sigterm`` to the group). Two pieces stay ours
because the hook has no public way to offer them: the last ``tail_lines`` output lines for the
error message (the hook keeps only the last line; :class:`~airflow_mlops_provider.hooks.subprocess.TailingSubprocessHook` keeps them
from the lines the hook logs) and the SIGKILL that follows SIGTERM when the group does not
exit in time (``send_sigterm`` only sends SIGTERM).

The result file is ``$MLOPS_RESULT_FILE`` (a private temporary path) instead of
``/airflow/xcom/return.json``; code meant for every runtime writes to
``os.environ["MLOPS_RESULT_FILE"]``, which every runtime sets.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_DIR_ENV
from airflow_mlops_provider.checkpoints.task import init_checkpoint, task_session
from airflow_mlops_provider.hooks.subprocess import TailingSubprocessHook
from airflow_mlops_provider.operators._common import (
    RESULT_FILE_ENV,
    ResourcesPartialMixin,
    check_command,
    container_failed_error,
    merge_env,
    parse_result_text,
    rendered,
    rendered_env,
    rendered_image,
    resources_for_execute,
    resources_for_init,
    validate_command,
    validate_env,
    validate_image,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops_provider.checkpoints.session import CheckpointSession

#: Seconds the process group gets between SIGTERM and SIGKILL when the task is killed.
KILL_GRACE_SECONDS = 10


def _check_local_command(command: Any) -> str | list[Any]:
    """``check_command``, and the local runtime has no image ``CMD`` to fall back on: not empty."""
    checked = check_command(command)
    if not checked:
        raise ValueError(f"command must be a non-empty string or list of strings, got {command!r}")
    return checked


class LocalProcessOperator(ResourcesPartialMixin, BaseOperator):
    """
    Run ``command`` as a local process with the container runtimes' contract.

    :param image: Accepted for a shared vocabulary: checked like on the container runtimes,
        then ignored (logged). (templated)
    :param command: The command, a list or a shell-like string. (templated)
    :param env: Environment variables laid over the worker's environment (``env`` wins; the
        names it overrides are logged). (templated)
    :param resources: A ``Resources`` or dict; validated, not enforced. (templated)
    :param cwd: Working directory of the process; default the worker's. (templated)
    :param return_result_file: Return the JSON the process wrote to ``$MLOPS_RESULT_FILE``.
    :param tail_lines: How many output lines an error message carries.
    :param checkpoint: Where the process's ``$MLOPS_CHECKPOINT_DIR`` is kept between tries: a
        path or ``s3://bucket/prefix``; default ``[mlops] checkpoint_uri``; ``""`` for none. See
        :mod:`airflow_mlops_provider.checkpoints`. (templated)
    :param checkpoint_interval: Seconds between periodic uploads (``[mlops] checkpoint_interval``).
    :param checkpoint_retention: ``"keep"`` (default) or ``"delete_on_success"``.
    :param checkpoint_max_bytes: The largest checkpoint (``"20Gi"``); larger fails without retries.
    :param checkpoint_conn_id: Airflow ``aws`` connection for ``s3://`` checkpoints.
    :param checkpoint_prefix: Where under the URI the checkpoint lives instead of the task
        instance's place (a sweep's trial).
    :param docker_kwargs: Docker-only arguments (as ``container_operator`` takes them); ignored.
    :param kubernetes_kwargs: Kubernetes-only arguments; ignored.
    """

    template_fields: Sequence[str] = ("image", "command", "env", "compute_resources", "cwd", "checkpoint")
    template_fields_renderers = {"env": "json", "compute_resources": "json"}
    ui_color = "#d9f0d3"

    def __init__(
        self,
        *,
        command: str | list[str],
        image: str | None = None,
        env: Mapping[str, Any] | None = None,
        resources: Any = None,
        cwd: str | None = None,
        return_result_file: bool = True,
        tail_lines: int = 50,
        checkpoint: str | None = None,
        checkpoint_interval: float | None = None,
        checkpoint_retention: str | None = None,
        checkpoint_max_bytes: int | str | None = None,
        checkpoint_conn_id: str | None = None,
        checkpoint_prefix: str | None = None,
        docker_kwargs: Mapping[str, Any] | None = None,
        kubernetes_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if command is None or (isinstance(command, (str, list)) and not command):
            raise ValueError(f"command must be a non-empty string or list of strings, got {command!r}")
        validate_command(command)
        validate_env(env)
        if image is not None:
            validate_image(image)
        self.command = command
        self.image = image
        self.env = dict(env) if isinstance(env, Mapping) else env
        self.compute_resources = resources_for_init(resources)
        self.cwd = cwd
        self.return_result_file = return_result_file
        self.tail_lines = tail_lines
        init_checkpoint(
            self,
            checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval,
            checkpoint_retention=checkpoint_retention,
            checkpoint_max_bytes=checkpoint_max_bytes,
            checkpoint_conn_id=checkpoint_conn_id,
            checkpoint_prefix=checkpoint_prefix,
        )
        self.ignored_arguments = [
            name
            for name, value in (("docker_kwargs", docker_kwargs), ("kubernetes_kwargs", kubernetes_kwargs))
            if value
        ]
        self._hook: TailingSubprocessHook | None = None

    def execute(self, context: Context) -> Any:
        if self.image is not None:
            rendered_image(self.image)
        resources = resources_for_execute(self.compute_resources)
        command = rendered("command", _check_local_command, self.command)
        env = rendered_env(self.env)
        if self.image:
            self.log.info("Local runtime: image %s is ignored; the command runs on the worker", self.image)
        if self.ignored_arguments:
            self.log.info("Local runtime ignores container-only arguments %s", self.ignored_arguments)
        if resources.gpus:
            self.log.warning(
                "Local runtime cannot reserve GPUs: resources ask for %d GPU(s); the process sees "
                "whatever devices the worker has",
                resources.gpus,
            )
        argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
        session = task_session(self, context)
        if session is not None:
            session.restore()
        succeeded = False
        try:
            result = self._run(argv, env, session)
            succeeded = True
            return result
        finally:
            if session is not None:
                session.finish(succeeded=succeeded)

    def _run(self, argv: list[str], env: dict[str, str], session: CheckpointSession | None) -> Any:
        """Run the process to its end (with the periodic checkpoint upload) and return its result."""
        source = f"Local process {argv!r}"
        with tempfile.TemporaryDirectory(prefix="mlops-local-") as tmp:
            result_file = Path(tmp) / "return.json"
            process_env = merge_env(env, os.environ, native_name="the worker's environment", log=self.log)
            process_env[RESULT_FILE_ENV] = str(result_file)
            if session is not None:
                process_env[CHECKPOINT_DIR_ENV] = str(session.local_dir)
                session.start()
            self._hook = hook = TailingSubprocessHook(log=self.log, tail_lines=self.tail_lines)
            try:
                # cwd=None would make the hook run in a fresh temporary directory.
                outcome = hook.run_command(argv, env=process_env, cwd=self.cwd or os.getcwd())
            finally:
                self._terminate()
            if outcome.exit_code != 0:
                raise container_failed_error(source, outcome.exit_code, hook.tail)
            if not self.return_result_file:
                return None
            if not result_file.exists():
                self.log.info("The process wrote no result file ($%s); returning None", RESULT_FILE_ENV)
                return None
            return parse_result_text(result_file.read_text(errors="backslashreplace"), source=source)

    def _terminate(self) -> None:
        """SIGTERM the process group through the hook; SIGKILL it if it outlives the grace period."""
        hook = self._hook
        process = hook.sub_process if hook is not None else None
        if hook is None or process is None or process.poll() is not None:
            return
        try:
            hook.send_sigterm()
            process.wait(timeout=KILL_GRACE_SECONDS)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def on_kill(self) -> None:
        self._terminate()
