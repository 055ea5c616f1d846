"""Checkpoint sync against a real S3 API (moto's server on loopback, through boto3)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_mlops_provider.checkpoints.session import CheckpointSession
from airflow_mlops_provider.checkpoints.settings import CheckpointSettings
from airflow_mlops_provider.checkpoints.store import CheckpointStoreError, S3Store, store_from_uri
from airflow_mlops_provider.checkpoints.sync import CheckpointSync
from airflow_mlops_provider.exceptions import CheckpointConfigError
from tests.support.moto_server import SECRET_KEY, running_moto_server

pytestmark = [pytest.mark.integration]
LOG = logging.getLogger("test.checkpoint.s3")


def _store(server, bucket="ckpt", prefix="root"):
    server.make_bucket(bucket)
    return store_from_uri(f"s3://{bucket}/{prefix}", client_kwargs=server.client_kwargs())


def _write(directory, rel, data: bytes):
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_round_trip_incremental_uploads_and_garbage_collection(moto_s3, tmp_path):
    store = _store(moto_s3)
    work = tmp_path / "work"
    sync = CheckpointSync(store, "d/r/t/-1", work)
    assert sync.restore().reason == "none yet"
    _write(work, "weights.bin", os.urandom(3 * 1024 * 1024))
    _write(work, "opt/state.bin", os.urandom(1024))
    _write(work, "mlops-checkpoint.json", json.dumps({"step": 10}).encode())
    first = sync.upload()
    assert (first.generation, first.files_uploaded, first.changed) == (1, 3, True)
    # Nothing changed: no new generation, nothing sent.
    assert sync.upload().changed is False
    _write(work, "mlops-checkpoint.json", json.dumps({"step": 11}).encode())
    second = sync.upload()
    assert (second.generation, second.files_uploaded, second.files_total) == (2, 1, 3)
    keys = store.list_keys("d/r/t/-1")
    # Only the manifest and the objects it lists remain: generation 1's meta file was collected.
    manifest = json.loads(store.get_bytes("d/r/t/-1/manifest.json"))
    assert sorted(keys) == sorted(
        ["d/r/t/-1/manifest.json", *(f"d/r/t/-1/{e['key']}" for e in manifest["files"].values())]
    )
    assert manifest["meta"] == {"step": 11}
    # The objects really are in the bucket, under the documented layout.
    listed = moto_s3.client().list_objects_v2(Bucket="ckpt", Prefix="root/d/r/t/-1/")["Contents"]
    assert {o["Key"] for o in listed} == {f"root/{k}" for k in keys}

    fresh = tmp_path / "fresh"
    result = CheckpointSync(store, "d/r/t/-1", fresh).restore()
    assert (result.restored, result.generation, result.files, result.step) == (True, 2, 3, 11)
    assert (fresh / "weights.bin").read_bytes() == (work / "weights.bin").read_bytes()
    # Restored files carry their mtimes: the next upload after a restore sends nothing.
    resumed = CheckpointSync(store, "d/r/t/-1", fresh)
    resumed.restore()
    assert resumed.upload().changed is False


def test_a_bucket_that_does_not_exist_is_permanent_and_named(moto_s3, tmp_path):
    store = store_from_uri("s3://no-such-bucket-x/p", client_kwargs=moto_s3.client_kwargs())
    with pytest.raises(CheckpointStoreError) as info:
        store.check()
    assert info.value.permanent
    assert "'no-such-bucket-x'" in str(info.value)
    # Through the session: a configuration error, never retried.
    settings = CheckpointSettings(uri="s3://no-such-bucket-x/p")
    session = CheckpointSession(settings, "d/r/t/-1", log=LOG, local_dir=tmp_path / "w")
    session._sync = CheckpointSync(store, "d/r/t/-1", session.local_dir)
    with pytest.raises(CheckpointConfigError, match="no-such-bucket-x"):
        session.restore()


def test_refused_credentials_are_permanent_and_the_secret_is_never_in_the_message(tmp_path):
    with running_moto_server(enforce_auth=True) as server:
        store = S3Store("ckpt", "p", client_kwargs=server.client_kwargs())
        with pytest.raises(CheckpointStoreError) as info:
            store.check()
    assert info.value.permanent
    assert "refused the credentials" in str(info.value)
    assert SECRET_KEY not in str(info.value)
    assert SECRET_KEY not in repr(store)


def test_an_upload_killed_mid_way_is_never_restored(moto_s3, tmp_path):
    store = _store(moto_s3, prefix="kill")
    work = tmp_path / "work"
    sync = CheckpointSync(store, "d/r/t/-1", work)
    _write(work, "state.bin", b"generation-one" * 1000)
    assert sync.upload().generation == 1
    # A second process uploads a large new state and is SIGKILLed part-way through.
    big = tmp_path / "big"
    _write(big, "state.bin", os.urandom(60 * 1024 * 1024))
    _write(big, "z-last.bin", b"never listed")
    script = textwrap.dedent(
        f"""
        import sys
        from airflow_mlops_provider.checkpoints.store import store_from_uri
        from airflow_mlops_provider.checkpoints.sync import CheckpointSync
        store = store_from_uri("s3://ckpt/kill", client_kwargs={moto_s3.client_kwargs()!r},
                               transfer_config={{"multipart_chunksize": 5 * 1024 * 1024, "max_concurrency": 1}})
        sync = CheckpointSync(store, "d/r/t/-1", {str(big)!r})
        sync._manifest, sync._loaded = {json.loads(store.get_bytes("d/r/t/-1/manifest.json"))!r}, True
        print("uploading", flush=True)
        sync.upload()
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "uploading"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    restored = tmp_path / "restored"
    result = CheckpointSync(store, "d/r/t/-1", restored).restore()
    assert result.generation == 1
    assert (restored / "state.bin").read_bytes() == b"generation-one" * 1000
    assert not (restored / "z-last.bin").exists()


def test_corrupt_manifest_and_missing_object_start_from_zero(moto_s3, tmp_path):
    store = _store(moto_s3, prefix="corrupt")
    work = tmp_path / "work"
    sync = CheckpointSync(store, "d/r/t/-1", work)
    _write(work, "a.bin", b"a" * 100)
    sync.upload()
    manifest = json.loads(store.get_bytes("d/r/t/-1/manifest.json"))
    store.delete_keys([f"d/r/t/-1/{manifest['files']['a.bin']['key']}"])
    result = CheckpointSync(store, "d/r/t/-1", tmp_path / "r1").restore()
    assert not result.restored
    assert "missing" in result.reason
    assert not any((tmp_path / "r1").iterdir())
    store.put_bytes("d/r/t/-1/manifest.json", b'{"format": 1, "generation": "x"}')
    assert CheckpointSync(store, "d/r/t/-1", tmp_path / "r2").restore().reason.startswith("corrupt")


def test_the_session_reads_an_airflow_aws_connection_and_logs_no_secret(
    moto_s3, tmp_path, monkeypatch, caplog
):
    moto_s3.make_bucket("conn-bucket")
    for name, value in moto_s3.aws_conn_uri_env("ckpt_s3").items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    settings = CheckpointSettings(uri="s3://conn-bucket/team", interval=3600, conn_id="ckpt_s3")
    session = CheckpointSession(settings, "d/r/t/-1", log=LOG, local_dir=tmp_path / "w")
    session.restore()
    _write(session.local_dir, "state.bin", b"s" * 2048)
    session.finish(succeeded=False)
    again = CheckpointSession(settings, "d/r/t/-1", log=LOG, local_dir=tmp_path / "w2")
    assert again.restore().restored
    assert "Uploaded checkpoint generation 1 to s3://conn-bucket/team/d/r/t/-1" in caplog.text
    assert SECRET_KEY not in caplog.text


def test_an_unreachable_endpoint_is_transient(tmp_path):
    import boto3
    from botocore.config import Config

    from tests.support.ports import free_port

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="AKIAUNREACHABLE01",
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3Store("ckpt", "p", client=client)
    with pytest.raises(CheckpointStoreError) as info:
        store.check()
    assert info.value.permanent is False
    assert "s3://ckpt/p" in str(info.value)
    assert SECRET_KEY not in str(info.value)
    work = tmp_path / "w"
    _write(work, "a.bin", b"a")
    with pytest.raises(CheckpointStoreError) as upload:
        CheckpointSync(store, "d", work).upload()
    assert upload.value.permanent is False


def test_the_pod_sidecar_main_uploads_periodically_and_on_sigterm(moto_s3, tmp_path):
    store = _store(moto_s3, bucket="sidecar", prefix="")
    work = tmp_path / "pod"
    _write(work, "state.bin", b"step-1")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": moto_s3.client_kwargs()["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    script = "import sys; from airflow_mlops_provider.checkpoints.sidecar import main; sys.exit(main(sys.argv[1:]))"
    args = [
        "sidecar",
        "--uri",
        "s3://sidecar",
        "--prefix",
        "d/r/t/0",
        "--dir",
        str(work),
        "--interval",
        "0.3",
    ]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "sidecar: uploading" in proc.stderr.readline()
        deadline = time.monotonic() + 30
        while store.get_bytes("d/r/t/0/manifest.json") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(store.get_bytes("d/r/t/0/manifest.json"))["generation"] == 1
        _write(work, "state.bin", b"step-2, written just before the pod stopped")
        # Kubernetes sends SIGTERM once the main container has exited.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "final upload: generation" in err
    assert SECRET_KEY not in err
    restored = tmp_path / "restored"
    assert CheckpointSync(store, "d/r/t/0", restored).restore().restored
    assert (restored / "state.bin").read_bytes() == b"step-2, written just before the pod stopped"


def test_the_pod_restore_main_exits_2_for_a_missing_bucket(moto_s3, tmp_path):
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": "AKIAMLOPSTESTKEY0001",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    script = "import sys; from airflow_mlops_provider.checkpoints.sidecar import main; sys.exit(main(sys.argv[1:]))"
    args = ["restore", "--uri", "s3://no-bucket-here/x", "--prefix", "p", "--dir", str(tmp_path / "d")]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "'no-bucket-here' does not exist" in done.stderr
    assert SECRET_KEY not in done.stderr + done.stdout
