"""The checkpoint engine on a real local store: URIs, atomic incremental sync, corrupt manifests, GC."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from airflow_mlops_provider.checkpoints.sidecar import main
from airflow_mlops_provider.checkpoints.store import (
    CheckpointStoreError,
    LocalStore,
    S3Store,
    parse_checkpoint_uri,
    store_from_uri,
)
from airflow_mlops_provider.checkpoints.sync import (
    MANIFEST_NAME,
    CheckpointSync,
    CheckpointTooLargeError,
)

PREFIX = "dag/run/task/-1"
LOG = logging.getLogger("test.checkpoint.engine")


def _write(directory, rel, data: bytes):
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_in_place(directory, rel, data: bytes):
    """A trainer that rewrites its file in place (not atomically): a reader may see half of it."""
    with open(directory / rel, "r+b") as out:
        out.write(data)


def _files(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _manifest(store):
    return json.loads(store.get_bytes(f"{PREFIX}/{MANIFEST_NAME}"))


class FlakyStore(LocalStore):
    """A real LocalStore whose ``put_file`` raises after ``fail_after`` objects (a crash mid-upload)."""

    def __init__(self, root, *, fail_after=None, fail_gets_after=None, on_put=None):
        super().__init__(root)
        self.puts = self.gets = 0
        self.fail_after, self.fail_gets_after, self.on_put = fail_after, fail_gets_after, on_put

    def put_file(self, key, path):
        if self.fail_after is not None and self.puts >= self.fail_after:
            raise CheckpointStoreError("connection reset by peer (simulated)")
        super().put_file(key, path)
        self.puts += 1
        if self.on_put is not None:
            self.on_put(key, path)

    def put_stream(self, key, stream):  # what CheckpointSync.upload calls, with the open file
        if self.fail_after is not None and self.puts >= self.fail_after:
            raise CheckpointStoreError("connection reset by peer (simulated)")
        super().put_stream(key, stream)
        self.puts += 1
        if self.on_put is not None:
            self.on_put(key, key)

    def get_file(self, key, path):
        if self.fail_gets_after is not None and self.gets >= self.fail_gets_after:
            raise CheckpointStoreError("read timed out (simulated)")
        super().get_file(key, path)
        self.gets += 1


# -- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/shared/ckpt", ("file", "/shared/ckpt", "")),
        ("/shared/ckpt/", ("file", "/shared/ckpt", "")),
        ("file:///shared/ckpt", ("file", "/shared/ckpt", "")),
        ("file://localhost/shared/x", ("file", "/shared/x", "")),
        ("s3://bucket", ("s3", "bucket", "")),
        ("s3://my.bucket-1/team/ckpt/", ("s3", "my.bucket-1", "team/ckpt")),
        ("S3://bucket/p", ("s3", "bucket", "p")),
    ],
)
def test_good_uris_parse(uri, expected):
    assert parse_checkpoint_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        (None, "non-empty"),
        (42, "non-empty"),
        ("relative/dir", "absolute"),
        ("./ckpt", "absolute"),
        ("~/ckpt", "absolute"),
        ("gs://bucket/p", "unsupported checkpoint URI scheme 'gs'"),
        ("http://host/p", "unsupported checkpoint URI scheme 'http'"),
        ("hdfs://nn/p", "unsupported"),
        ("s3://", "must name a bucket"),
        ("s3:///prefix", "must name a bucket"),
        ("s3://Bucket/p", "invalid bucket name 'Bucket'"),
        ("s3://ab/p", "invalid bucket name 'ab'"),
        ("s3://bucket_under/p", "invalid bucket name"),
        ("s3://a..b/p", "invalid bucket name"),
        ("s3://bucket/p?versionId=1", "query or fragment"),
        ("s3://bucket/p#frag", "query or fragment"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty segments"),
        ("s3://host:9000/p", "port"),
        ("file://otherhost/path", "absolute local path"),
    ],
)
def test_bad_uris_are_refused_naming_the_value(uri, says):
    with pytest.raises(ValueError, match="checkpoint") as info:
        parse_checkpoint_uri(uri)
    assert says in str(info.value)
    if isinstance(uri, str) and uri.strip():
        assert repr(uri) in str(info.value)
    # store_from_uri turns it into a permanent store error (never retried).
    with pytest.raises(CheckpointStoreError) as err:
        store_from_uri(uri)
    assert err.value.permanent


def test_credentials_in_an_s3_uri_are_refused_and_redacted():
    with pytest.raises(ValueError, match="checkpoint_conn_id") as info:
        parse_checkpoint_uri("s3://AKIAXXXX:supersecret@bucket/p")
    assert "supersecret" not in str(info.value)
    assert "AKIAXXXX" not in str(info.value)


def test_store_from_uri_builds_each_store_without_leaking_client_arguments(tmp_path):
    local = store_from_uri(f"file://{tmp_path}/root")
    assert isinstance(local, LocalStore)
    assert local.uri == f"{tmp_path}/root"
    s3 = store_from_uri("s3://bucket/team/", client_kwargs={"aws_secret_access_key": "s3cr3t-value"})
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", "team", "s3://bucket/team")
    assert "s3cr3t-value" not in repr(s3)


# -- LocalStore --------------------------------------------------------------------------------


def test_local_store_that_cannot_be_written_is_permanent_and_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = LocalStore(blocker / "ckpt")
    with pytest.raises(CheckpointStoreError) as info:
        store.check()
    assert info.value.permanent
    assert repr(str(blocker / "ckpt")) in str(info.value)
    with pytest.raises(CheckpointStoreError) as put:
        store.put_bytes("x/manifest.json", b"{}")
    assert put.value.permanent
    assert str(blocker / "ckpt") in str(put.value)


def test_local_store_basic_operations_and_keys_that_escape(tmp_path):
    store = LocalStore(tmp_path / "root")
    store.check()
    assert store.get_bytes("p/none") is None
    store.put_bytes("p/a/b.bin", b"hello")
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 3000)
    store.put_file("p/c.bin", source)
    assert store.list_keys("p") == ["p/a/b.bin", "p/c.bin"]
    assert store.list_keys("other") == []
    target = tmp_path / "out.bin"
    store.get_file("p/c.bin", target)
    assert target.read_bytes() == b"x" * 3000
    with pytest.raises(CheckpointStoreError) as missing:
        store.get_file("p/gone.bin", target)
    assert missing.value.missing
    store.delete_keys(["p/a/b.bin", "p/c.bin"])
    assert store.list_keys("p") == []
    assert not (tmp_path / "root" / "p").exists()  # emptied directories are pruned
    with pytest.raises(CheckpointStoreError, match="leaves the store") as escape:
        store.put_bytes("../outside", b"x")
    assert escape.value.permanent
    assert not (tmp_path / "outside").exists()


# -- sync --------------------------------------------------------------------------------------


def test_round_trip_incremental_and_garbage_collection(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    sync = CheckpointSync(store, PREFIX, work)
    first_restore = sync.restore()
    assert (first_restore.restored, first_restore.reason) == (False, "none yet")
    _write(work, "weights.bin", os.urandom(200_000))
    _write(work, "opt/state.bin", b"o" * 1000)
    _write(work, "mlops-checkpoint.json", json.dumps({"step": 5}).encode())
    first = sync.upload()
    assert (first.generation, first.files_uploaded, first.files_total, first.changed) == (1, 3, 3, True)
    assert first.bytes_uploaded == first.bytes_total == 200_000 + 1000 + len(json.dumps({"step": 5}))
    again = sync.upload()
    assert (again.changed, again.generation, again.files_uploaded) == (False, 1, 0)

    _write(work, "mlops-checkpoint.json", json.dumps({"step": 6}).encode())
    (work / "opt/state.bin").unlink()
    second = sync.upload()
    assert (second.generation, second.files_uploaded, second.files_total) == (2, 1, 2)
    manifest = _manifest(store)
    assert manifest["format"] == 1
    assert manifest["generation"] == 2
    assert manifest["meta"] == {"step": 6}
    assert manifest["files"]["weights.bin"]["key"] == "data/1/weights.bin"  # referenced, not re-sent
    assert manifest["files"]["mlops-checkpoint.json"]["key"] == "data/2/mlops-checkpoint.json"
    assert manifest["bytes"] == 200_000 + len(json.dumps({"step": 6}))
    # GC: only the manifest and what it lists remain.
    assert store.list_keys(PREFIX) == sorted(
        [f"{PREFIX}/manifest.json", f"{PREFIX}/data/1/weights.bin", f"{PREFIX}/data/2/mlops-checkpoint.json"]
    )

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "stale-from-a-dead-try.txt").write_text("stale")
    resumed = CheckpointSync(store, PREFIX, fresh)
    result = resumed.restore()
    assert (result.restored, result.generation, result.files, result.step, result.reason) == (
        True,
        2,
        2,
        6,
        "restored",
    )
    assert result.bytes == manifest["bytes"]
    assert result.written_at == pytest.approx(manifest["created"])
    assert _files(fresh) == _files(work)
    # mtimes come back too: nothing to send after a restore; a change continues the generations.
    assert resumed.upload().changed is False
    _write(fresh, "weights.bin", b"new")
    assert resumed.upload().generation == 3
    assert not [p for p in fresh.iterdir() if p.name.startswith(".mlops-restore-")]


def test_a_sync_that_did_not_restore_continues_the_stored_generations(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    _write(work, "a.bin", b"a")
    assert CheckpointSync(store, PREFIX, work).upload().generation == 1
    _write(work, "a.bin", b"aa")
    # e.g. a worker reattached to a running container: no restore, same directory.
    assert CheckpointSync(store, PREFIX, work).upload().generation == 2


def test_a_file_that_changes_while_it_is_read_goes_with_the_next_round(tmp_path):
    work = tmp_path / "work"
    _write(work, "a.bin", b"a1")
    _write(work, "b.bin", b"b1")
    state = {"armed": False}

    def rewrite_b(key, path):
        if state["armed"] and key.endswith("b.bin"):
            state["armed"] = False
            time.sleep(0.01)
            _write_in_place(work, "b.bin", b"b2-longer")  # the trainer wrote during the upload

    store = FlakyStore(tmp_path / "store", on_put=rewrite_b)
    sync = CheckpointSync(store, PREFIX, work)
    assert sync.upload().generation == 1
    _write(work, "a.bin", b"a2")
    os.utime(work / "b.bin", ns=(1, 1))  # b changed too
    state["armed"] = True
    puts = store.puts
    second = sync.upload()
    # b.bin was torn on its first read: the upload's next round sent the settled file, so the
    # generation is the directory as it was, never a2 beside b1.
    assert (second.generation, second.files_uploaded) == (2, 2)
    assert store.puts - puts == 3  # a.bin, the torn b.bin, the settled b.bin
    files = _manifest(store)["files"]
    assert (files["a.bin"]["key"], files["b.bin"]["key"]) == ("data/2/a.bin", "data/2/b.bin")
    restored = tmp_path / "r"
    CheckpointSync(store, PREFIX, restored).restore()
    assert _files(restored) == {"a.bin": b"a2", "b.bin": b"b2-longer"}
    third = sync.upload()  # nothing changed since
    assert (third.generation, third.changed, third.files_uploaded) == (2, False, 0)


def test_a_new_file_that_changes_while_read_and_one_that_vanishes_are_left_out(tmp_path):
    work = tmp_path / "work"
    _write(work, "steady.bin", b"s")

    def churn(key, path):
        if key.endswith("fresh.bin"):
            _write_in_place(work, "fresh.bin", b"rewritten")
        if key.endswith("steady.bin"):
            (work / "zz-state.json.tmp").rename(work / "zz-state.json")  # a trainer's atomic write

    (work / "zz-state.json.tmp").write_bytes(b"{}")
    _write(work, "fresh.bin", b"first")
    store = FlakyStore(tmp_path / "store", on_put=churn)
    result = CheckpointSync(store, PREFIX, work).upload()
    # fresh.bin changed every time it was read and had no earlier version; zz-state.json.tmp
    # vanished before its turn, and the next round found and sent zz-state.json.
    assert sorted(_manifest(store)["files"]) == ["steady.bin", "zz-state.json"]
    assert (result.files_uploaded, result.generation) == (2, 1)


def test_max_bytes_refuses_before_uploading_anything(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    _write(work, "a.bin", b"a" * 600)
    _write(work, "b.bin", b"b" * 600)
    sync = CheckpointSync(store, PREFIX, work, max_bytes=1000)
    with pytest.raises(CheckpointTooLargeError) as info:
        sync.upload()
    assert info.value.permanent
    assert isinstance(info.value, CheckpointStoreError)
    assert "1200 bytes" in str(info.value)
    assert "checkpoint_max_bytes=1000" in str(info.value)
    assert store.list_keys(PREFIX) == []
    (work / "b.bin").unlink()
    assert sync.upload().bytes_total == 600


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (b"{not json", "cannot be read"),
        (b"\xff\xfe\x00", "cannot be read"),
        (b"[1, 2]", "not a format-1 manifest"),
        (b'{"format": 99, "generation": 1, "files": {}}', "not a format-1 manifest"),
        (b'{"format": 1, "generation": "7", "files": {}}', "lacks generation or files"),
        (b'{"format": 1, "generation": 7, "files": []}', "lacks generation or files"),
        (b'{"format": 1, "generation": 7, "files": {"a.bin": {"size": 1}}}', "'a.bin' is malformed"),
        (
            b'{"format": 1, "generation": 7, "files": {"../x": {"key": "k", "size": 1}}}',
            "'../x' is malformed",
        ),
        (b'{"format": 1, "generation": 7, "files": {"/etc/x": {"key": "k", "size": 1}}}', "malformed"),
    ],
)
def test_a_corrupt_manifest_starts_from_zero_with_a_warning(tmp_path, caplog, manifest, reason):
    store = LocalStore(tmp_path / "store")
    store.put_bytes(f"{PREFIX}/{MANIFEST_NAME}", manifest)
    work = tmp_path / "work"
    _write(work, "stale.bin", b"left by a dead try")
    caplog.set_level(logging.WARNING)
    result = CheckpointSync(store, PREFIX, work, log=LOG).restore()
    assert result.restored is False
    assert result.reason.startswith("corrupt: ")
    assert reason in result.reason
    assert _files(work) == {}
    assert "not restoring it" in caplog.text
    assert reason in caplog.text


def test_missing_object_or_wrong_size_is_corrupt_and_nothing_is_restored(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    for name in ("a.bin", "b.bin", "c.bin"):
        _write(work, name, name.encode() * 100)
    sync = CheckpointSync(store, PREFIX, work)
    sync.upload()
    manifest = _manifest(store)
    store.delete_keys([f"{PREFIX}/{manifest['files']['c.bin']['key']}"])  # the last one restored
    target = tmp_path / "target"
    _write(target, "previous.bin", b"p")
    missing = CheckpointSync(store, PREFIX, target).restore()
    assert (missing.restored, missing.reason) == (False, "corrupt: object 'data/1/c.bin' is missing")
    assert _files(target) == {}  # never a partial restore (a.bin and b.bin were downloaded)

    manifest["files"].pop("c.bin")
    manifest["files"]["b.bin"]["size"] = 7
    store.put_bytes(f"{PREFIX}/{MANIFEST_NAME}", json.dumps(manifest).encode())
    wrong = CheckpointSync(store, PREFIX, target).restore()
    assert wrong.reason == "corrupt: 'b.bin' is 500 bytes, the manifest says 7"
    assert _files(target) == {}
    # The next upload replaces the corrupt checkpoint with a sound one.
    healer = CheckpointSync(store, PREFIX, work)
    healer.restore()
    _write(work, "a.bin", b"healed")
    assert healer.upload().generation == 1
    assert CheckpointSync(store, PREFIX, tmp_path / "again").restore().restored


def test_a_transient_error_mid_restore_raises_and_leaves_the_directory_alone(tmp_path):
    work = tmp_path / "work"
    for name in ("a.bin", "b.bin"):
        _write(work, name, name.encode())
    store = FlakyStore(tmp_path / "store", fail_gets_after=1)
    CheckpointSync(store, PREFIX, work).upload()
    target = tmp_path / "target"
    _write(target, "mine.bin", b"untouched")
    with pytest.raises(CheckpointStoreError, match="simulated") as info:
        CheckpointSync(store, PREFIX, target).restore()
    assert info.value.permanent is False
    assert _files(target) == {"mine.bin": b"untouched"}
    assert [p.name for p in target.iterdir()] == ["mine.bin"]  # no staging directory left


def test_an_upload_interrupted_mid_way_is_never_restored_and_gc_cleans_up(tmp_path):
    work = tmp_path / "work"
    for name in ("a.bin", "b.bin", "c.bin"):
        _write(work, name, b"gen1-" + name.encode())
    store = FlakyStore(tmp_path / "store")
    sync = CheckpointSync(store, PREFIX, work)
    assert sync.upload().generation == 1
    for name in ("a.bin", "b.bin", "c.bin"):
        _write(work, name, b"gen2-" + name.encode())
    store.fail_after = store.puts + 2  # two objects of generation 2 land, then the "crash"
    with pytest.raises(CheckpointStoreError, match="simulated"):
        sync.upload()
    keys = store.list_keys(PREFIX)
    assert f"{PREFIX}/data/2/a.bin" in keys
    assert f"{PREFIX}/data/2/b.bin" in keys
    restored = tmp_path / "restored"
    result = CheckpointSync(store, PREFIX, restored).restore()
    assert result.generation == 1
    assert _files(restored) == {n: b"gen1-" + n.encode() for n in ("a.bin", "b.bin", "c.bin")}
    # The next complete upload supersedes it and removes the orphans.
    store.fail_after = None
    assert sync.upload().generation == 2
    assert store.list_keys(PREFIX) == sorted(
        [f"{PREFIX}/manifest.json", *(f"{PREFIX}/data/2/{n}" for n in ("a.bin", "b.bin", "c.bin"))]
    )


def test_delete_removes_the_whole_checkpoint(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    _write(work, "a.bin", b"a")
    _write(work, "sub/b.bin", b"b")
    sync = CheckpointSync(store, PREFIX, work)
    sync.upload()
    store.put_bytes("dag/run/other/-1/manifest.json", b"{}")  # a neighbour stays
    assert sync.delete() == 3
    assert store.list_keys(PREFIX) == []
    assert store.list_keys("dag") == ["dag/run/other/-1/manifest.json"]
    assert CheckpointSync(store, PREFIX, tmp_path / "r").restore().reason == "none yet"


def test_main_restores_and_exits_2_on_a_permanent_error(tmp_path):
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    _write(work, "m.bin", b"model")
    CheckpointSync(store, PREFIX, work).upload()
    target = tmp_path / "pod-dir"
    args = ["restore", "--uri", str(tmp_path / "store"), "--prefix", PREFIX, "--dir", str(target)]
    assert main(args) == 0
    assert _files(target) == {"m.bin": b"model"}
    assert main(["restore", "--uri", "gs://b/p", "--prefix", PREFIX, "--dir", str(target)]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["restore", "--uri", str(blocker / "s"), "--prefix", PREFIX, "--dir", str(target)]) == 2
