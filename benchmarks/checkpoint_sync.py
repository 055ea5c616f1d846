"""Checkpoint sync: throughput against boto3's transfer manager, and what periodic sync costs a training loop.

Everything is real and on loopback: moto's S3 server (``moto[server]``) and boto3.

1. **Throughput**, for a checkpoint of ``--sizes`` (100 MB and 1 GB; random bytes, one file):
   our upload (``CheckpointSync.upload``: the file, then the manifest) and restore (manifest,
   file, size check, rename into place) against the same transfers done by boto3's transfer
   manager alone (``upload_file``/``download_file`` with the same ``TransferConfig``: what
   ``aws s3 cp`` does), alternating, best of ``--rounds``. Goal: >= 0.9x of boto3 alone.
2. **Periodic sync cost**: a loop of CPU-bound steps (fixed work, about ``--step-ms`` each,
   calibrated at start) in the same process as the sync thread (the worst case: it shares the
   GIL, as a Python trial does; Docker and local trainers are other processes), that rewrites a
   ``--ckpt-mb`` checkpoint atomically every 10 steps, for ``--loop-seconds``, with no sync,
   with our periodic sync at the default interval (60 s), and at a short one (5 s): wall time
   overhead against no sync, median of ``--repeat`` interleaved runs. Goal: under 2 % at the
   default interval.

Usage: ``.venv/bin/python benchmarks/checkpoint_sync.py [--quick]`` (about 20 min on 2 cores;
``--quick``: 100 MB, 40 s loops with 20 s and 5 s intervals, twice: about 5 min;
``--loop-seconds 0``: throughput only).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_mlops_provider.checkpoints.session import CheckpointSession  # noqa: E402
from airflow_mlops_provider.checkpoints.settings import CheckpointSettings  # noqa: E402
from airflow_mlops_provider.checkpoints.store import S3Store  # noqa: E402
from airflow_mlops_provider.checkpoints.sync import CheckpointSync  # noqa: E402
from tests.support.moto_server import running_moto_server  # noqa: E402

MB = 1000 * 1000
LOG = logging.getLogger("bench.checkpoint")


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = min(left, 16 * 1024 * 1024)
            out.write(os.urandom(chunk))
            left -= chunk


def throughput(server, size: int, rounds: int, tmp: Path) -> dict[str, float]:
    """MB/s of boto3 alone and of our sync, for upload and restore (best of ``rounds``)."""
    from boto3.s3.transfer import TransferConfig

    client = server.client()
    server.make_bucket("bench")
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    source = work / "model.bin"
    _random_file(source, size)
    config = TransferConfig()
    times: dict[str, list[float]] = {k: [] for k in ("boto3_up", "ours_up", "boto3_down", "ours_down")}
    store = S3Store("bench", "ours", client=client)

    def boto3_alone() -> None:
        started = time.perf_counter()
        client.upload_file(str(source), "bench", "plain/model.bin", Config=config)
        times["boto3_up"].append(time.perf_counter() - started)
        target = tmp / "plain.bin"
        started = time.perf_counter()
        client.download_file("bench", "plain/model.bin", str(target), Config=config)
        times["boto3_down"].append(time.perf_counter() - started)
        target.unlink()
        client.delete_object(Bucket="bench", Key="plain/model.bin")

    def ours() -> None:
        sync = CheckpointSync(store, "d/r/t/-1", work)
        os.utime(source)  # a changed file: the upload sends it
        started = time.perf_counter()
        result = sync.upload()
        times["ours_up"].append(time.perf_counter() - started)
        assert result.bytes_uploaded == size
        restored = tmp / "restored"
        started = time.perf_counter()
        back = CheckpointSync(store, "d/r/t/-1", restored).restore()
        times["ours_down"].append(time.perf_counter() - started)
        assert back.bytes == size
        shutil.rmtree(restored)
        CheckpointSync(store, "d/r/t/-1", work).delete()

    for round_ in range(rounds):  # alternate which goes first: neither gets the warmer caches
        for run in (boto3_alone, ours) if round_ % 2 == 0 else (ours, boto3_alone):
            run()
    source.unlink()
    return {k: size / MB / min(v) for k, v in times.items()}


def _calibrate(ms: float) -> int:
    """Iterations of :func:`_work` that take about ``ms`` on this machine now (fixed work per step)."""
    n = 200_000
    started = time.perf_counter()
    _work(n)
    return max(1, int(n * (ms / 1000) / (time.perf_counter() - started)))


def _work(iterations: int) -> int:
    x = 0
    for i in range(iterations):
        x += i * i % 7
    return x


def training_loop(
    session: CheckpointSession | None,
    directory: Path,
    *,
    seconds: float,
    step_ms: float,
    ckpt_mb: int,
    work: int,
) -> float:
    """Wall seconds of a fixed number of steps, rewriting the checkpoint every 10 steps."""
    steps = int(seconds * 1000 / step_ms)
    blob = os.urandom(ckpt_mb * MB)
    if session is not None:
        session.restore()
        session.start()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        _work(work)  # fixed work: a sync that takes CPU or the GIL makes the step longer
        if step % 10 == 0:
            tmp = directory / ".state.tmp"
            tmp.write_bytes(blob[step % 7 :] + blob[: step % 7])
            os.replace(tmp, directory / "state.bin")
    wall = time.perf_counter() - started
    if session is not None:
        session.finish(succeeded=False)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="100,1000", help="checkpoint sizes in MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop-seconds", type=float, default=150, help="0: throughput only")
    parser.add_argument("--step-ms", type=float, default=50)
    parser.add_argument("--ckpt-mb", type=int, default=50)
    parser.add_argument("--intervals", default="60,5")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions of the loops")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.loop_seconds, args.intervals = "100", 2, 40, "20,5"
    logging.basicConfig(level=logging.WARNING)
    with running_moto_server() as server, tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"== checkpoint throughput against moto on loopback (best of {args.rounds})")
        print(
            f"{'size':>8} {'boto3 up':>10} {'ours up':>10} {'ratio':>6} {'boto3 down':>11} {'ours down':>10} {'ratio':>6}"
        )
        for size_mb in (int(s) for s in args.sizes.split(",")):
            r = throughput(server, size_mb * MB, args.rounds, tmp)
            print(
                f"{size_mb:>6}MB {r['boto3_up']:>8.1f}/s {r['ours_up']:>8.1f}/s {r['ours_up'] / r['boto3_up']:>6.2f}"
                f" {r['boto3_down']:>9.1f}/s {r['ours_down']:>8.1f}/s {r['ours_down'] / r['boto3_down']:>6.2f}"
                "   (MB/s; goal: ratio >= 0.9)"
            )
        if args.loop_seconds <= 0:  # throughput only
            return 0
        print(
            f"== periodic sync cost: {args.loop_seconds:.0f} s of {args.step_ms:.0f} ms steps, "
            f"a {args.ckpt_mb} MB checkpoint rewritten every 10 steps"
        )
        server.make_bucket("loop")
        kwargs = server.client_kwargs()
        work = _calibrate(args.step_ms)
        labels = ["none", *args.intervals.split(",")]
        runs: dict[str, list[float]] = {label: [] for label in labels}
        uploads: dict[str, int] = {}
        for repetition in range(args.repeat):  # interleaved: none, 60 s, 5 s, none, ...
            for label in labels:
                directory = tmp / f"loop-{label}-{repetition}"
                directory.mkdir()
                session = None
                if label != "none":
                    prefix = f"loop-{label}-{repetition}"
                    settings = CheckpointSettings(uri="s3://loop/bench", interval=float(label))
                    session = CheckpointSession(settings, prefix, log=LOG, local_dir=directory)
                    session._sync = CheckpointSync(
                        S3Store("loop", "bench", client_kwargs=kwargs), prefix, directory
                    )
                runs[label].append(
                    training_loop(
                        session,
                        directory,
                        seconds=args.loop_seconds,
                        step_ms=args.step_ms,
                        ckpt_mb=args.ckpt_mb,
                        work=work,
                    )
                )
                uploads[label] = uploads.get(label, 0) + (session.uploads if session is not None else 0)
                shutil.rmtree(directory, ignore_errors=True)
        walls = {label: statistics.median(values) for label, values in runs.items()}
        base = walls["none"]
        print(
            f"{'sync':>12} {'median wall s':>14} {'uploads':>8} {'overhead':>9}   ({args.repeat} interleaved runs each)"
        )
        for label, wall in walls.items():
            name = "none" if label == "none" else f"every {label} s"
            print(f"{name:>12} {wall:>14.2f} {uploads[label]:>8} {100 * (wall - base) / base:>8.2f}%")
        print("goal: under 2 % at the default interval (60 s)")
        print(
            f"(mean step wall without sync: {base / (args.loop_seconds * 1000 / args.step_ms) * 1000:.1f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
