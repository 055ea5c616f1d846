"""Exclusive file locks between processes of one host: the one ``fcntl`` helper of the package.

Both users hold ``flock`` locks that the kernel drops when the holder's file is closed or its
process dies (even by ``SIGKILL``), so a dead holder never needs cleaning up:

- the GPU leases (:mod:`airflow_mlops_provider.docker_gpu.leases`) *try* one lock per device
  and keep the descriptor for as long as the container runs (:func:`try_lock_fd`,
  :func:`release_fd`);
- the Feast hook *waits* for a registry or online-store lock around a read-modify-write
  (:func:`hold_lock`).

``filelock`` would do the waiting half, but not the other: a lease writes who holds it into the
lock file for people debugging a wait, which ``filelock`` does not allow on the file it locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["hold_lock", "release_fd", "try_lock_fd"]


def try_lock_fd(path: Path) -> int | None:
    """
    Take an exclusive lock on ``path`` (created if missing) now; return its descriptor, or None if held.

    The lock lasts until :func:`release_fd` or until the process ends.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def release_fd(fd: int) -> None:
    """Unlock and close ``fd``; safe to call from a signal handler and on a closed descriptor."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


@contextmanager
def hold_lock(path: Path, timeout: float, on_timeout: Callable[[float], Exception]) -> Iterator[None]:
    """
    Hold an exclusive lock on ``path`` for the ``with`` block, waiting up to ``timeout`` seconds.

    The lock's directory is created if missing. Waiting polls with a short back-off (1 to 5 ms),
    so a released lock is taken within milliseconds.

    :param path: The lock file.
    :param timeout: Seconds to wait before giving up.
    :param on_timeout: Builds the exception raised after ``timeout`` (given the seconds waited).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    pause = 0.001
    while (fd := try_lock_fd(path)) is None:
        if time.monotonic() > deadline:
            raise on_timeout(timeout)
        time.sleep(pause)
        pause = min(pause * 2, 0.005)
    try:
        yield
    finally:
        release_fd(fd)
