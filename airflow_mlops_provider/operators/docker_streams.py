"""What flows out of a ``GpuDockerOperator`` container: its log lines and its result file.

- :func:`stream_lines` logs the container's output live, line by line, and keeps the tail for
  the failure message (or every line for ``log_xcom`` with ``xcom_all``);
- :func:`result_dir_tar` is put into the container before it starts, so ``/airflow/xcom``
  exists and is writable by any user;
- :func:`read_result_file` reads ``/airflow/xcom/return.json`` after the container exited:
  the task's XCom, None when missing, :class:`~airflow_mlops_provider.exceptions.ResultFileError`
  when it is not JSON (the result contract of every runtime, :mod:`.operators._common`).

``tarfile`` and ``io`` are imported at module level: DockerOperator's module loads them anyway.
"""

from __future__ import annotations

import collections
import io
import tarfile
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import stringify

from airflow_mlops_provider.operators._common import (
    ERROR_TAIL_LINES,
    RESULT_DIR,
    RESULT_FILE,
    parse_result_text,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from docker import APIClient

__all__ = ["BURST_LINES", "read_result_file", "result_dir_tar", "stream_lines"]

#: A chunk holding more complete lines than this is logged as one multi-line record (a burst,
#: e.g. a progress dump); below it every line is its own record.
BURST_LINES = 32


def stream_lines(stream: Iterable[Any], log: Any, *, keep_all: bool) -> collections.deque[str]:
    """
    Log lines as they arrive; return the last 20 lines (or all of them with ``keep_all``).

    Each chunk read from the engine is logged at once (live). Ordinary output gets one log
    record per line; a burst of more than ``BURST_LINES`` lines in one chunk is logged as one
    record, which keeps a container that prints hundreds of thousands of lines from being
    slowed down by per-record logging costs.
    """
    lines: collections.deque[str] = collections.deque(maxlen=None if keep_all else ERROR_TAIL_LINES)
    buffer = ""
    for chunk in stream:
        buffer += stringify(chunk)
        if "\n" not in buffer:
            continue
        *complete, buffer = buffer.split("\n")
        stripped = [line.rstrip() for line in complete]
        if len(stripped) > BURST_LINES:
            log.info("%s", "\n".join(stripped))
        else:
            for line in stripped:
                log.info("%s", line)
        lines.extend(stripped)
    if buffer:
        line = buffer.rstrip()
        log.info("%s", line)
        lines.append(line)
    return lines


def result_dir_tar() -> bytes:
    """A tar holding the empty, world-writable result directory, put into the container before start."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = RESULT_DIR.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o777
            tar.addfile(info)
    return buf.getvalue()


def read_result_file(cli: APIClient, container_id: str, *, source: str) -> tuple[bool, Any]:
    """
    Return ``(True, document)`` for the container's result file, or ``(False, None)`` when it wrote none.

    :param cli: The Docker client.
    :param container_id: The exited container.
    :param source: Who wrote it, for the message (``"Container mlops-train-..."``).
    :raises ResultFileError: when the file is not JSON.
    """
    from docker.errors import NotFound

    try:
        chunks, stat = cli.get_archive(container_id, RESULT_FILE)
    except NotFound:
        return False, None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.extractfile(stat["name"])
        text = member.read().decode(errors="replace") if member else ""
    return True, parse_result_text(text, source=source)
