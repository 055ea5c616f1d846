"""Checkpoint stores: a local or shared path, and ``s3://`` through boto3's transfer manager.

This module imports only the standard library (boto3 and botocore inside functions): it also
runs inside Kubernetes pods whose image does not have this package
(:mod:`airflow_mlops_provider.checkpoints.kubernetes` ships its source).

Both stores take keys relative to their root (``dag/run/task/-1/manifest.json``). Errors are a
:class:`CheckpointStoreError`; ``permanent`` says whether a retry can help (a missing bucket,
refused credentials or a path that cannot be written cannot).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CheckpointStoreError", "LocalStore", "S3Store", "parse_checkpoint_uri", "store_from_uri"]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_EXPECTED = "expected an absolute path, file:///path or s3://bucket/prefix"
#: Local errors that no retry cures.
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EDQUOT}
#: S3 error codes that no retry cures.
_NO_BUCKET = {"NoSuchBucket"}
_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
    "401",
}


class CheckpointStoreError(Exception):
    """
    A checkpoint store operation failed.

    :param message: What failed, naming the location (never a credential).
    :param permanent: True when retrying cannot help (configuration), False for transient trouble.
    :param missing: True when the object asked for does not exist.
    """

    def __init__(self, message: str, *, permanent: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.missing = missing


def parse_checkpoint_uri(uri: str) -> tuple[str, str, str]:
    """
    Return ``("file", "/abs/root", "")`` or ``("s3", bucket, prefix)`` for a checkpoint URI.

    :raises ValueError: naming the value and what was expected.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"checkpoint URI must be a non-empty string ({_EXPECTED}), got {uri!r}")
    text = uri.strip()
    if "://" not in text:
        if not os.path.isabs(text):
            raise ValueError(f"checkpoint path must be absolute ({_EXPECTED}), got {uri!r}")
        return "file", os.path.normpath(text), ""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(f"checkpoint URI must not have a query or fragment ({_EXPECTED}), got {uri!r}")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"file:// checkpoint URI must name an absolute local path ({_EXPECTED}), got {uri!r}"
            )
        return "file", os.path.normpath(parts.path), ""
    if scheme in ("s3", "s3a"):
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"s3:// checkpoint URI must name a bucket ({_EXPECTED}), got {uri!r}")
        if "@" in bucket or ":" in bucket:
            raise ValueError(
                "s3:// checkpoint URI must not carry credentials or a port; use checkpoint_conn_id "
                f"and an endpoint_url instead, got {_redacted(text)!r}"
            )
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(
                f"s3:// checkpoint URI has an invalid bucket name {bucket!r} (3-63 characters: lowercase "
                f"letters, digits, '.' and '-'), got {uri!r}"
            )
        prefix = parts.path.strip("/")
        if any(segment in (".", "..") for segment in prefix.split("/")) or "//" in prefix:
            raise ValueError(
                f"s3:// checkpoint prefix must not hold '.', '..' or empty segments, got {uri!r}"
            )
        return "s3", bucket, prefix
    raise ValueError(f"unsupported checkpoint URI scheme {parts.scheme!r} ({_EXPECTED}), got {uri!r}")


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://***@{host}{parts.path}" if "@" in parts.netloc else uri


def store_from_uri(
    uri: str, *, client_kwargs: dict[str, Any] | None = None, transfer_config: dict[str, Any] | None = None
) -> LocalStore | S3Store:
    """
    Return the store of ``uri``.

    :param uri: A path, ``file:///path`` or ``s3://bucket/prefix``.
    :param client_kwargs: boto3 ``client("s3", ...)`` arguments (endpoint, keys, region).
    :param transfer_config: ``boto3.s3.transfer.TransferConfig`` arguments.
    :raises CheckpointStoreError: (permanent) for a malformed URI.
    """
    try:
        scheme, root, prefix = parse_checkpoint_uri(uri)
    except ValueError as err:
        raise CheckpointStoreError(str(err), permanent=True) from err
    if scheme == "file":
        return LocalStore(root)
    return S3Store(root, prefix, client_kwargs=client_kwargs, transfer_config=transfer_config)


class LocalStore:
    """
    A checkpoint store in a local or shared directory (NFS, a mounted volume).

    Every write goes to a temporary file in the target's directory, is fsynced, then renamed
    into place: a reader sees the old file or the new one, never half of one.

    :param root: The store's root directory (created when missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        root = self.root.resolve()
        if path != root and root not in path.parents:
            raise CheckpointStoreError(f"checkpoint key {key!r} leaves the store {self.uri}", permanent=True)
        return path

    def check(self) -> None:
        """Create the root if needed and prove it is writable; raise a permanent error naming it otherwise."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".mlops-write-check-"):
                pass
        except OSError as err:
            raise CheckpointStoreError(
                f"checkpoint path {self.uri!r} cannot be written: {err.strerror or err}", permanent=True
            ) from err

    def _atomic_write(self, target: Path, write: Any) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    write(out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            raise CheckpointStoreError(
                f"could not write {target} in checkpoint store {self.uri!r}: {err.strerror or err}",
                permanent=err.errno in _NOT_WRITABLE,
            ) from err

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as source:
            self._atomic_write(self._path(key), lambda out: shutil.copyfileobj(source, out, 1 << 20))

    def put_stream(self, key: str, stream: Any) -> None:
        """Write the rest of the open binary ``stream`` to ``key`` (atomically)."""
        self._atomic_write(self._path(key), lambda out: shutil.copyfileobj(stream, out, 1 << 20))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError as err:
            raise CheckpointStoreError(
                f"checkpoint object {key!r} is missing from {self.uri!r}", missing=True
            ) from err
        except OSError as err:
            raise CheckpointStoreError(f"could not read {key!r} from {self.uri!r}: {err}") from err

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CheckpointStoreError(f"could not read {key!r} from {self.uri!r}: {err}") from err

    def list_keys(self, prefix: str) -> list[str]:
        """
        Every key under ``prefix``, the temporary ``.part`` files of writes cut off by a kill
        included: no manifest refers to them, so the garbage collection and ``delete`` remove them.
        """
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Prune directories left empty, up to the root.
            parent = path.parent
            root = self.root.resolve()
            while parent != root and root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent


class S3Store:
    """
    A checkpoint store in an S3 bucket (AWS or an S3-compatible store: MinIO, moto, Ceph).

    Files go through boto3's transfer manager (``upload_file``/``download_file``: multipart and
    concurrent for large files), so a checkpoint moves as fast as boto3 alone moves it.

    :param bucket: The bucket.
    :param prefix: The key prefix every key is put under.
    :param client_kwargs: ``boto3.client("s3", ...)`` arguments; credentials from boto3's
        standard chain when they hold none.
    :param transfer_config: ``TransferConfig`` arguments (default: boto3's).
    :param client: A ready client (tests, benchmarks).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client_kwargs: dict[str, Any] | None = None,
        transfer_config: dict[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client_kwargs = dict(client_kwargs or {})
        self._transfer_kwargs = dict(transfer_config or {})
        self._client = client
        self._transfer: Any = None

    def __repr__(self) -> str:  # never the client arguments: they hold the keys
        return f"S3Store({self.uri!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60
            )
            self._client = boto3.session.Session().client("s3", config=config, **self._client_kwargs)
        return self._client

    @property
    def transfer(self) -> Any:
        if self._transfer is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer = TransferConfig(**self._transfer_kwargs)
        return self._transfer

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, err: BaseException, action: str) -> CheckpointStoreError:
        """Sort a boto3 error into permanent or transient; the message never holds a key or secret."""
        response = getattr(err, "response", None) or {}
        code = str((response.get("Error") or {}).get("Code") or "")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404") or status == 404 and code != "NoSuchBucket":
            return CheckpointStoreError(
                f"object missing from {self.uri} while trying to {action}", missing=True
            )
        if code in _NO_BUCKET:
            return CheckpointStoreError(
                f"checkpoint bucket {self.bucket!r} does not exist ({self.uri})", permanent=True
            )
        if code in _REFUSED or status in (401, 403):
            return CheckpointStoreError(
                f"the S3 store refused the credentials for {self.uri} while trying to {action} ({code or status}); "
                "check checkpoint_conn_id or the AWS environment",
                permanent=True,
            )
        if type(err).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return CheckpointStoreError(
                f"no AWS credentials found for {self.uri}: set checkpoint_conn_id or the AWS environment",
                permanent=True,
            )
        if type(err).__name__ in ("InvalidEndpointError", "ParamValidationError"):
            return CheckpointStoreError(f"cannot {action} {self.uri}: {err}", permanent=True)
        detail = code or type(err).__name__
        return CheckpointStoreError(f"could not {action} {self.uri} ({detail}): {err}")

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as err:
            raise self._error(err, action) from err
        except Exception as err:  # the transfer manager wraps errors in its own types
            cause = err.__cause__ or err.__context__
            if isinstance(cause, (BotoCoreError, ClientError)):
                raise self._error(cause, action) from err
            if type(err).__name__ in ("S3UploadFailedError", "RetriesExceededError"):
                raise CheckpointStoreError(f"could not {action} {self.uri}: {err}") from err
            raise

    def check(self) -> None:
        """Prove the bucket exists and the credentials may list it (permanent error otherwise)."""
        kwargs = {"Bucket": self.bucket, "MaxKeys": 1}
        if self.prefix:
            kwargs["Prefix"] = self.prefix + "/"
        self._call("list", self.client.list_objects_v2, **kwargs)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._call(
            "upload to", self.client.upload_file, str(path), self.bucket, self._key(key), Config=self.transfer
        )

    def put_stream(self, key: str, stream: Any) -> None:
        """Upload the open binary ``stream`` to ``key`` through the transfer manager (multipart when large)."""
        self._call(
            "upload to", self.client.upload_fileobj, stream, self.bucket, self._key(key), Config=self.transfer
        )

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._call(
            "download from",
            self.client.download_file,
            self.bucket,
            self._key(key),
            str(path),
            Config=self.transfer,
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("upload to", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except ClientError as err:
            if (err.response.get("Error") or {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(err, "read from") from err
        except Exception as err:
            from botocore.exceptions import BotoCoreError

            if isinstance(err, BotoCoreError):
                raise self._error(err, "read from") from err
            raise

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []

        def collect() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(item["Key"] for item in page.get("Contents") or [])

        self._call("list", collect)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[cut:] for key in keys)

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            response = self._call(
                "delete from",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                raise CheckpointStoreError(
                    f"could not delete {len(errors)} object(s) from {self.uri}: {errors[0].get('Code')}"
                )
