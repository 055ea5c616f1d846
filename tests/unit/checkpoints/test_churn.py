"""A trainer that keeps rewriting its checkpoint while it is uploaded (found by benchmarks/checkpoint_sync.py).

The first version of the upload re-read the file by path and compared its stat before and after:
a trainer that replaces its file atomically more often than one upload takes was then never
uploaded at all (2 uploads in 56 s at a 5 s interval). The upload now reads one open file: an
atomic replace leaves it on a complete older version, which is sent; a write in place is still
refused as possibly torn.
"""

from __future__ import annotations

import json
import os
import threading
import time

from airflow_mlops_provider.checkpoints.store import LocalStore
from airflow_mlops_provider.checkpoints.sync import META_NAME, UPLOAD_ROUNDS, CheckpointSync

SIZE = 256 * 1024


class SlowLocalStore(LocalStore):
    """A real local store whose writes take a while, so the trainer's rewrites overlap them."""

    def put_stream(self, key, stream):
        def slow_chunks():
            while chunk := stream.read(16 * 1024):
                time.sleep(0.01)
                yield chunk

        data = b"".join(slow_chunks())
        self.put_bytes(key, data)


def _version(n: int) -> bytes:
    return bytes([n % 251]) * SIZE


def _rewrite(path, stop, *, atomic: bool):
    n = 1
    while not stop.is_set():
        n += 1
        if atomic:
            tmp = path.with_name(".state.tmp")
            tmp.write_bytes(_version(n))
            os.replace(tmp, path)
        else:
            with open(path, "r+b") as out:
                out.write(_version(n)[: SIZE // 2])
        time.sleep(0.005)


def test_atomic_rewrites_during_the_upload_still_upload_a_complete_version(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = work / "state.bin"
    path.write_bytes(_version(1))
    store = SlowLocalStore(tmp_path / "store")
    sync = CheckpointSync(store, "p", work)
    stop = threading.Event()
    writer = threading.Thread(target=_rewrite, args=(path, stop), kwargs={"atomic": True})
    writer.start()
    try:
        result = sync.upload()
    finally:
        stop.set()
        writer.join()
    assert result.changed
    assert result.files_uploaded == 1
    restored = tmp_path / "restored"
    assert CheckpointSync(store, "p", restored).restore().restored
    data = (restored / "state.bin").read_bytes()
    assert len(data) == SIZE
    assert len(set(data)) == 1  # one whole version, never a mix of two
    # The newer file on disk differs from what was sent: the next upload sends it.
    assert sync.upload().files_uploaded == 1


def test_writes_in_place_during_the_upload_are_not_trusted(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = work / "state.bin"
    path.write_bytes(_version(1))
    store = SlowLocalStore(tmp_path / "store")
    sync = CheckpointSync(store, "p", work)
    first = sync.upload()
    assert first.files_uploaded == 1
    time.sleep(0.01)
    os.utime(path)  # changed since the last upload
    stop = threading.Event()
    writer = threading.Thread(target=_rewrite, args=(path, stop), kwargs={"atomic": False})
    writer.start()
    try:
        second = sync.upload()
    finally:
        stop.set()
        writer.join()
    assert second.files_uploaded == 0  # possibly torn: the previous upload stays the checkpoint
    restored = tmp_path / "restored"
    CheckpointSync(store, "p", restored).restore()
    assert (restored / "state.bin").read_bytes() == _version(1)


def test_a_write_cut_off_by_a_kill_leaves_no_part_file_behind(tmp_path):
    """A SIGKILL mid-write leaves ``.<name>.<random>.part``; the next upload's GC and delete() remove it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.bin").write_bytes(b"s" * 100)
    store = LocalStore(tmp_path / "store")
    sync = CheckpointSync(store, "p", work)
    sync.upload()
    orphan = tmp_path / "store" / "p" / "data" / "1" / ".state.bin.x1y2.part"
    orphan.write_bytes(b"half a write")
    os.utime(work / "state.bin", ns=(5, 5))
    sync.upload()
    assert not orphan.exists()
    (tmp_path / "store" / "p" / "data" / "2").mkdir(parents=True, exist_ok=True)
    orphan = tmp_path / "store" / "p" / "data" / "2" / ".other.part"
    orphan.write_bytes(b"x")
    sync.delete()
    assert not (tmp_path / "store" / "p").exists() or not any((tmp_path / "store" / "p").rglob("*.part"))


def test_the_manifest_is_one_checkpoint_never_state_of_one_step_beside_meta_of_the_next(tmp_path):
    """
    Found by CI (the local-s3-sigkill kill case ran 65 steps where 64 were due): a trainer that
    wrote step k+1 while step k was being uploaded left a manifest whose ``meta`` (read from
    disk after the files were sent) said k+1 beside ``state.json`` of step k. The upload now
    looks again and sends what changed, and ``meta`` is the metadata file it sent.
    """
    work = tmp_path / "work"
    work.mkdir()

    def checkpoint(step: int) -> None:  # the trainer's protocol: its state, then the metadata file
        for name, data in (("state.json", {"step": step, "w": [step] * 100}), (META_NAME, {"step": step})):
            tmp = work / f".{name}.tmp"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, work / name)

    checkpoint(1)
    fired = []

    class TrainerStepsDuringTheUpload(LocalStore):
        def put_stream(self, key, stream):
            super().put_stream(key, stream)
            if key.endswith("state.json") and not fired:
                fired.append(key)
                time.sleep(0.002)
                checkpoint(2)  # the next step lands after state.json of step 1 was sent

    store = TrainerStepsDuringTheUpload(tmp_path / "store")
    result = CheckpointSync(store, "p", work).upload()
    assert fired
    manifest = json.loads((tmp_path / "store" / "p" / "manifest.json").read_text())
    restored = tmp_path / "restored"
    restore = CheckpointSync(store, "p", restored).restore()
    state = json.loads((restored / "state.json").read_text())
    assert (state["step"], manifest["meta"], restore.step) == (2, {"step": 2}, 2)
    assert json.loads((restored / META_NAME).read_text()) == {"step": 2}
    assert (result.files_uploaded, result.files_total) == (2, 2)


def test_a_directory_that_never_settles_still_gets_a_checkpoint_and_a_warning(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    path = work / "state.bin"
    path.write_bytes(_version(1))
    store = SlowLocalStore(tmp_path / "store")
    stop = threading.Event()
    writer = threading.Thread(target=_rewrite, args=(path, stop), kwargs={"atomic": True})
    writer.start()
    try:
        with caplog.at_level("WARNING"):
            result = CheckpointSync(store, "p", work).upload()
    finally:
        stop.set()
        writer.join()
    assert (result.changed, result.generation, result.files_uploaded) == (True, 1, 1)
    assert f"kept changing during {UPLOAD_ROUNDS} upload rounds: generation 1 may mix" in caplog.text
