"""The Kubernetes init container (``restore``) and sidecar (``sidecar``) of a checkpointed pod.

Standard library only, with :mod:`~airflow_mlops_provider.checkpoints.store` and
:mod:`~airflow_mlops_provider.checkpoints.sync`: the three modules travel to the pod in an env
var (:mod:`~airflow_mlops_provider.checkpoints.kubernetes`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time

from airflow_mlops_provider.checkpoints.store import CheckpointStoreError, store_from_uri
from airflow_mlops_provider.checkpoints.sync import CheckpointSync, UploadResult

__all__ = ["main"]

_LOG = logging.getLogger(__name__)


def _log_upload(kind: str, result: UploadResult) -> None:
    rate = result.bytes_uploaded / result.seconds / 1e6 if result.seconds > 0 else 0.0
    _LOG.info(
        "%s upload: generation %s, %d of %d file(s) sent, %d bytes in %.2f s (%.1f MB/s)",
        kind,
        result.generation,
        result.files_uploaded,
        result.files_total,
        result.bytes_uploaded,
        result.seconds,
        rate,
    )


def main(argv: list[str] | None = None) -> int:
    """
    The Kubernetes init container (``restore``) and sidecar (``sidecar``).

    Credentials come from the standard AWS environment (a Secret's ``envFrom``, or the pod's
    identity); the endpoint from ``AWS_ENDPOINT_URL``. The sidecar uploads every ``--interval``
    seconds and once more on SIGTERM (Kubernetes sends it after the main container exits), then
    exits 0. Exit codes: 0 done, 2 a permanent error (a bad URI, no bucket, refused credentials,
    too large), 1 anything else.
    """
    parser = argparse.ArgumentParser(prog="mlops-checkpoint-sync")
    parser.add_argument("mode", choices=["restore", "sidecar"])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--max-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s checkpoint: %(message)s")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        store = store_from_uri(args.uri, client_kwargs={"endpoint_url": endpoint} if endpoint else None)
        sync = CheckpointSync(store, args.prefix, args.dir, max_bytes=args.max_bytes)
        if args.mode == "restore":
            store.check()
            result = sync.restore()
            # Not ours to chmod when the pod runs as a non-root user (an emptyDir is 0777 already).
            with contextlib.suppress(PermissionError):
                os.chmod(args.dir, 0o777)
            what = f"{result.reason} ({result.files} files, {result.bytes} bytes)"
            _LOG.info("restore of %s/%s: %s", store.uri, args.prefix, what)
            return 0
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        _LOG.info(
            "sidecar: uploading %s to %s/%s every %s s", args.dir, store.uri, args.prefix, args.interval
        )
        while not stopping.wait(args.interval):
            try:
                _log_upload("periodic", sync.upload())
            except CheckpointStoreError as err:
                if err.permanent:
                    raise
                _LOG.warning("periodic upload failed (will try again): %s", err)
        for attempt in range(3):  # the final upload is the one a retry needs: try it harder
            try:
                _log_upload("final", sync.upload())
                return 0
            except CheckpointStoreError as err:
                if err.permanent or attempt == 2:
                    raise
                _LOG.warning("final upload failed (trying again): %s", err)
                time.sleep(1 + attempt)
        return 1  # pragma: no cover
    except CheckpointStoreError as err:
        _LOG.error("%s", err)
        return 2 if err.permanent else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
