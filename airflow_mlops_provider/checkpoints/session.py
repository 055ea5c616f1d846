"""``CheckpointSession``: a task's checkpoint on the worker (the Docker and local runtimes, Python trials).

The lifecycle, the same on each of those runtimes::

    session = CheckpointSession(settings, task_prefix(identity), log=self.log)
    session.restore()      # before the trainer starts: the latest complete checkpoint, or nothing
    session.start()        # a thread uploads what changed every ``checkpoint_interval`` seconds
    ...                    # the trainer reads and writes $MLOPS_CHECKPOINT_DIR = session.local_dir
    session.finish(succeeded=...)   # the final upload, then retention

``finish`` runs in the operator's ``finally``: after success, failure, ``execution_timeout``,
SIGTERM and a mark-failed alike. A SIGKILLed worker runs no ``finally``: the retry gets the last
periodic upload. What is uploaded is atomic (the manifest is written last, see
:mod:`airflow_mlops_provider.checkpoints.sync`), so a half-written checkpoint is never restored.

Store errors are sorted once, here: a permanent one (no such bucket, credentials refused, a
path that cannot be written, a checkpoint over ``checkpoint_max_bytes``) is a
``CheckpointConfigError`` (no retries); anything else a ``CheckpointError`` (retried).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops_provider.checkpoints.settings import CheckpointSettings

__all__ = ["CheckpointSession", "default_local_dir", "human_bytes"]

_DEFAULT_LOCAL_ROOT = "/tmp/airflow-mlops-checkpoints"


def human_bytes(count: float) -> str:
    """Return ``count`` bytes as ``"12.0 MB"`` (decimal units, as transfer rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


def _rate(count: int, seconds: float) -> str:
    return f"{human_bytes(count / seconds)}/s" if seconds > 0 else "n/a"


def default_local_dir(settings: CheckpointSettings, prefix: str) -> Path:
    """
    Return the worker directory of the checkpoint at ``prefix``: the same on every try.

    ``[mlops] checkpoint_local_dir`` (default ``/tmp/airflow-mlops-checkpoints``), then a hash of
    the store and prefix, so two stores never share a directory.
    """
    from airflow.sdk import conf

    root = (conf.get("mlops", "checkpoint_local_dir", fallback="") or "").strip() or _DEFAULT_LOCAL_ROOT
    digest = hashlib.sha256(f"{settings.uri}\x1f{prefix}".encode()).hexdigest()[:20]
    return Path(root) / digest


class CheckpointSession:
    """
    One task's (or trial's) checkpoint on the worker: restore, periodic upload, final upload, retention.

    :param settings: The resolved checkpoint settings.
    :param prefix: Where under ``settings.uri`` it lives (``task_prefix`` or ``trial_prefix``).
    :param log: The task's logger.
    :param local_dir: The working directory the trainer sees; default :func:`default_local_dir`.
    """

    def __init__(
        self, settings: CheckpointSettings, prefix: str, *, log: Any, local_dir: str | Path | None = None
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self.log = log
        self.local_dir = Path(local_dir) if local_dir is not None else default_local_dir(settings, prefix)
        self.location = settings.location(prefix)
        self._sync: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.uploads = 0

    # -- plumbing -------------------------------------------------------------------------------

    def _translate(self, err: BaseException, action: str) -> BaseException:
        """A store error as our exception: permanent ones never retried."""
        from airflow_mlops_provider.exceptions import CheckpointConfigError, CheckpointError

        message = f"Could not {action} the checkpoint at {self.location}: {err}"
        if getattr(err, "permanent", False):
            return CheckpointConfigError(message, location=self.location)
        return CheckpointError(message, location=self.location)

    @property
    def sync(self) -> Any:
        """The ``CheckpointSync`` between :attr:`local_dir` and the store (built on first use)."""
        if self._sync is None:
            from airflow_mlops_provider.checkpoints.sync import CheckpointSync

            store = self.settings.store()
            self._sync = CheckpointSync(store, self.prefix, self.local_dir, max_bytes=self.settings.max_bytes)
        return self._sync

    def _prepare_dir(self) -> None:
        try:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            # Containers may run as another user: they must be able to write here.
            os.chmod(self.local_dir, 0o777)
        except OSError as err:
            from airflow_mlops_provider.exceptions import CheckpointConfigError

            raise CheckpointConfigError(
                f"Checkpoint working directory {str(self.local_dir)!r} cannot be created or written: {err}; "
                "set [mlops] checkpoint_local_dir to a writable directory",
                location=self.location,
            ) from err

    # -- lifecycle ------------------------------------------------------------------------------

    def restore(self) -> Any:
        """
        Check the store, then put the latest complete checkpoint into :attr:`local_dir` (emptied first).

        :returns: The ``RestoreResult``.
        :raises CheckpointConfigError: the store cannot be used (no retries).
        :raises CheckpointError: the store could not be reached (retried).
        """
        from airflow_mlops_provider.checkpoints.store import CheckpointStoreError

        self._prepare_dir()
        try:
            self.sync.store.check()
            result = self.sync.restore()
        except CheckpointStoreError as err:
            raise self._translate(err, "restore") from err
        self._prepare_dir()  # restore may have swapped the directory in
        if result.restored:
            age = (
                f", written {time.time() - result.written_at:.0f} s ago"
                if result.written_at is not None
                else ""
            )
            step = f", step {result.step}" if result.step is not None else ""
            self.log.info(
                "Restored checkpoint from %s: generation %s, %d file(s), %s%s%s, in %.2f s (%s)",
                self.location,
                result.generation,
                result.files,
                human_bytes(result.bytes),
                step,
                age,
                result.seconds,
                _rate(result.bytes, result.seconds),
            )
        elif result.reason.startswith("corrupt"):
            self.log.warning(
                "CHECKPOINT NOT RESTORED: the checkpoint at %s is %s. Starting from zero; the next "
                "upload replaces it.",
                self.location,
                result.reason,
            )
        else:
            self.log.info("No checkpoint at %s yet: starting from zero", self.location)
        return result

    def upload(self) -> Any:
        """Upload what changed since the last upload, and log it; return the ``UploadResult``."""
        result = self.sync.upload()
        if result.changed:
            self.uploads += 1
            self.log.info(
                "Uploaded checkpoint generation %s to %s: %d of %d file(s) changed, %s of %s in %.2f s (%s)",
                result.generation,
                self.location,
                result.files_uploaded,
                result.files_total,
                human_bytes(result.bytes_uploaded),
                human_bytes(result.bytes_total),
                result.seconds,
                _rate(result.bytes_uploaded, result.seconds),
            )
        return result

    def start(self) -> None:
        """Start the periodic upload (every ``settings.interval`` seconds) in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"checkpoint-sync-{self.prefix}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from airflow_mlops_provider.checkpoints.store import CheckpointStoreError
        from airflow_mlops_provider.checkpoints.sync import CheckpointTooLargeError

        # Below the trainer: on Linux a thread has its own nice value (the worker keeps its own).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.wait(self.settings.interval):
            try:
                self.upload()
            except CheckpointTooLargeError as err:  # the final upload raises it again
                self.log.error("Periodic checkpoint upload stopped: %s", err)
                return
            except CheckpointStoreError as err:
                self.log.warning(
                    "Periodic checkpoint upload to %s failed (will try again): %s", self.location, err
                )
            except Exception as err:  # the trainer must not die with the sync thread
                self.log.warning(
                    "Periodic checkpoint upload to %s failed (will try again): %r", self.location, err
                )

    def stop(self) -> None:
        """Stop the periodic upload (waits for an upload in progress)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def finish(self, *, succeeded: bool) -> None:
        """
        Stop the periodic upload, upload the final state, then apply ``checkpoint_retention``.

        After success with ``"delete_on_success"`` nothing is uploaded: the checkpoint and the
        working directory are deleted. After a final upload the worker's working copy is removed
        (a retry restores from the store). A failed final upload after a failure is logged (the
        retry gets the last periodic upload) and the working copy kept; after success it raises,
        so a ``"keep"`` checkpoint is never silently missing.

        :raises CheckpointConfigError: the checkpoint is over ``checkpoint_max_bytes``.
        """
        from airflow_mlops_provider.checkpoints.store import CheckpointStoreError

        self.stop()
        if succeeded and self.settings.retention == "delete_on_success":
            self.delete()
            return
        try:
            self.upload()
        except CheckpointStoreError as err:
            translated = self._translate(err, "upload")
            if succeeded or getattr(err, "permanent", False):
                raise translated from err
            self.log.warning("%s; the retry gets the last periodic upload", translated)
            return
        # The store holds it now, and a retry restores from the store: the worker's copy goes.
        shutil.rmtree(self.local_dir, ignore_errors=True)

    def delete(self, *, reason: str = "checkpoint_retention='delete_on_success'") -> int:
        """Delete the checkpoint in the store and the working directory; return the objects deleted."""
        from airflow_mlops_provider.checkpoints.store import CheckpointStoreError

        try:
            count = self.sync.delete()
        except CheckpointStoreError as err:
            self.log.warning("Could not delete the checkpoint at %s: %s", self.location, err)
            return 0
        shutil.rmtree(self.local_dir, ignore_errors=True)
        self.log.info("Deleted checkpoint %s (%d object(s)): %s", self.location, count, reason)
        return count

    def __enter__(self) -> CheckpointSession:
        self.restore()
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(succeeded=exc_type is None)
