"""CheckpointSession on a real local store: restore, periodic and final uploads, retention, errors, logs."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.checkpoints.session import CheckpointSession, default_local_dir
from airflow_mlops_provider.checkpoints.settings import CheckpointSettings
from airflow_mlops_provider.exceptions import CheckpointConfigError

LOG = logging.getLogger("test.checkpoint.session")


def _session(tmp_path, **settings):
    store = tmp_path / "store"
    config = CheckpointSettings(uri=str(store), **{"interval": 3600.0, **settings})
    return CheckpointSession(config, "dag/run/task/-1", log=LOG, local_dir=tmp_path / "work")


def _write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_restore_upload_restore_round_trip_with_step_and_size_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    first = _session(tmp_path)
    assert first.restore().restored is False
    assert "No checkpoint at" in caplog.text
    _write(first.local_dir, "state.json", json.dumps({"step": 30}))
    _write(first.local_dir, "mlops-checkpoint.json", json.dumps({"step": 30}))
    _write(first.local_dir, "weights/layer0.bin", "x" * 5000)
    first.finish(succeeded=False)
    assert "Uploaded checkpoint generation" in caplog.text
    assert str(tmp_path / "store") in caplog.text

    second = _session(tmp_path)
    assert not second.local_dir.exists()  # the final upload removed the worker's copy
    second.local_dir.mkdir()
    (second.local_dir / "stale.txt").write_text("left by a dead try")
    result = second.restore()
    assert result.restored
    assert result.step == 30
    assert result.files == 3
    assert sorted(
        p.relative_to(second.local_dir).as_posix() for p in second.local_dir.rglob("*") if p.is_file()
    ) == [
        "mlops-checkpoint.json",
        "state.json",
        "weights/layer0.bin",
    ]
    assert (second.local_dir / "weights/layer0.bin").read_text() == "x" * 5000
    assert "step 30" in caplog.text
    assert "Restored checkpoint from" in caplog.text


def test_periodic_upload_runs_while_the_trainer_runs(tmp_path):
    session = _session(tmp_path, interval=0.2)
    session.restore()
    session.start()
    try:
        for step in range(1, 6):
            _write(session.local_dir, "state.json", json.dumps({"step": step}))
            time.sleep(0.15)
        deadline = time.monotonic() + 10
        while session.uploads < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        session.stop()
    assert session.uploads >= 2
    manifest = json.loads((tmp_path / "store/dag/run/task/-1/manifest.json").read_text())
    assert "state.json" in manifest["files"]


def test_periodic_upload_survives_store_errors_and_the_final_upload_takes_the_last_state(tmp_path, caplog):
    from airflow_mlops_provider.checkpoints.store import CheckpointStoreError, LocalStore
    from airflow_mlops_provider.checkpoints.sync import CheckpointSync

    class FailingStore(LocalStore):
        failing = False

        def put_stream(self, key, stream):
            if self.failing:
                raise CheckpointStoreError("connection reset by peer (simulated)")
            super().put_stream(key, stream)

    caplog.set_level(logging.INFO, logger=LOG.name)
    session = _session(tmp_path, interval=0.02)
    store = FailingStore(tmp_path / "store")
    session._sync = CheckpointSync(store, session.prefix, session.local_dir)  # a real store that fails
    session.restore()
    _write(session.local_dir, "state.json", "1")
    session.start()
    try:
        deadline = time.monotonic() + 30
        while session.uploads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session.uploads >= 1
        store.failing = True  # the store goes away for a while
        _write(session.local_dir, "state.json", "22")
        while "failed (will try again)" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert f"Periodic checkpoint upload to {session.location} failed (will try again)" in caplog.text
        assert session._thread is not None
        assert session._thread.is_alive()  # the sync thread lives on
        store.failing = False
        _write(session.local_dir, "state.json", "final")
    finally:
        session.finish(succeeded=False)
    assert session._thread is None
    restored = tmp_path / "restored"
    assert CheckpointSync(LocalStore(tmp_path / "store"), session.prefix, restored).restore().restored
    assert (restored / "state.json").read_text() == "final"


def test_delete_on_success_removes_store_and_working_copy_keep_keeps_them(tmp_path):
    kept = _session(tmp_path)
    kept.restore()
    _write(kept.local_dir, "state.json", "{}")
    kept.finish(succeeded=True)
    assert (tmp_path / "store/dag/run/task/-1/manifest.json").exists()

    deleted = _session(tmp_path, retention="delete_on_success")
    assert deleted.restore().restored
    deleted.finish(succeeded=True)
    assert not (tmp_path / "store/dag/run/task/-1").exists() or not any(
        (tmp_path / "store/dag/run/task/-1").rglob("*")
    )
    assert not deleted.local_dir.exists()
    # A failed try under delete_on_success keeps its checkpoint for the retry.
    failed = _session(tmp_path, retention="delete_on_success")
    failed.restore()
    _write(failed.local_dir, "state.json", "{}")
    failed.finish(succeeded=False)
    assert (tmp_path / "store/dag/run/task/-1/manifest.json").exists()


def test_corrupt_manifest_starts_from_zero_with_a_loud_warning(tmp_path, caplog):
    first = _session(tmp_path)
    first.restore()
    _write(first.local_dir, "state.json", "{}")
    first.finish(succeeded=False)
    (tmp_path / "store/dag/run/task/-1/manifest.json").write_text("{not json")
    caplog.set_level(logging.INFO, logger=LOG.name)
    result = _session(tmp_path).restore()
    assert result.restored is False
    assert result.reason.startswith("corrupt")
    assert "CHECKPOINT NOT RESTORED" in caplog.text


def test_over_max_bytes_is_a_config_error_without_retries(tmp_path):
    session = _session(tmp_path, max_bytes=1000)
    session.restore()
    _write(session.local_dir, "big.bin", "y" * 5000)
    with pytest.raises(CheckpointConfigError) as info:
        session.finish(succeeded=False)
    assert isinstance(info.value, AirflowFailException)
    assert "1000" in str(info.value)


def test_an_unwritable_store_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    config = CheckpointSettings(uri=str(blocker / "store"), interval=60.0)
    session = CheckpointSession(config, "d/r/t/-1", log=LOG, local_dir=tmp_path / "work")
    with pytest.raises(CheckpointConfigError) as info:
        session.restore()
    assert str(blocker) in str(info.value)


def test_working_directory_is_stable_per_store_and_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR", str(tmp_path))
    a = CheckpointSettings(uri="s3://a/p")
    b = CheckpointSettings(uri="s3://b/p")
    assert default_local_dir(a, "d/r/t/-1") == default_local_dir(a, "d/r/t/-1")
    assert default_local_dir(a, "d/r/t/-1") != default_local_dir(b, "d/r/t/-1")
    assert default_local_dir(a, "d/r/t/-1").parent == tmp_path
