"""One way to read and write files and folders at local paths or ``s3://bucket/key`` URIs.

S3 goes through boto3 with its standard configuration chain (``AWS_ENDPOINT_URL``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles),
retries with exponential backoff, multipart transfers above 16 MiB and streamed downloads.

Folders (datasets, checkpoints, models) are *published* as whole versions: see
:mod:`calgrpo.storage.folders`. Errors name the URI and the S3 error code, never a credential.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from calgrpo.errors import CalgrpoError
from calgrpo.manifest import sha256_file

log = logging.getLogger(__name__)

MULTIPART_BYTES = 16 << 20


class StorageError(CalgrpoError):
    """A read or write failed (after retries)."""


class IncompleteOutputError(StorageError):
    """A folder has no manifest: it is still being written, or its writer died."""


class IntegrityError(StorageError):
    """A file does not match its manifest entry."""


class ConflictError(StorageError):
    """A conditional write lost: another writer changed the object since it was read."""


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"s3 URI {uri!r} has no bucket; expected s3://bucket/key")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri, *parts))


_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")  # fmt: skip


def s3_client(max_attempts: int = 6, connect_timeout: float = 5.0, read_timeout: float = 60.0):
    """A boto3 S3 client with retries and timeouts; endpoint and credentials from the environment.

    A fresh boto3 session per distinct environment: boto3's default session caches the credentials
    it first saw, which would ignore a later change of AWS_* variables.
    """
    import boto3
    from botocore.config import Config

    key = (tuple(os.environ.get(k) for k in _ENV_KEYS), max_attempts, connect_timeout, read_timeout)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            config = Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},  # exponential backoff, jitter
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                s3={"addressing_style": "path"},  # works with AWS and with local servers alike
            )
            _CLIENTS[key] = boto3.session.Session().client("s3", config=config)
        return _CLIENTS[key]


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)


def _wrap(error: Exception, action: str, uri: str) -> StorageError:
    code = _code(error)
    hints = {
        "SignatureDoesNotMatch": "the secret key is wrong",
        "InvalidAccessKeyId": "the access key is unknown to this server",
        "AccessDenied": "these credentials may not do this",
        "NoSuchBucket": "the bucket does not exist",
        "NoSuchKey": "no object at this key",
        "PreconditionFailed": "another writer changed it first",
        "404": "no object at this key",
    }
    detail = f"{code}: {hints.get(code, 'see the server log')}" if code else type(error).__name__
    return StorageError(f"{action} {uri} failed ({detail})")


def upload_file(local: str | Path, uri: str, client=None, sha256: str | None = None) -> None:
    """Copy a local file to ``uri`` (multipart above 16 MiB). On S3 the object records the file's
    sha256 (``x-amz-meta-sha256``), so a reader can verify it without a manifest."""
    if not is_s3(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, uri)
        return
    bucket, key = split_s3(uri)
    extra = {"Metadata": {"sha256": sha256 or sha256_file(Path(local))}}
    try:
        client = client or s3_client()
        client.upload_file(str(local), bucket, key, ExtraArgs=extra, Config=_transfer_config())
    except Exception as exc:  # boto3 raises many types; all become one clear error
        raise _wrap(exc, "upload to", uri) from None


def download_file(uri: str, local: str | Path, client=None, expected_size: int | None = None) -> None:
    """Copy ``uri`` to a local file, streamed in parts. With ``expected_size`` (a manifest's), an
    object of another size is refused before a byte is downloaded: a hostile writer cannot make a
    reader fill its disk with a file the manifest says is small."""
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        if expected_size is not None and Path(uri).stat().st_size != expected_size:
            raise IntegrityError(f"{uri} does not match its manifest (size)")
        shutil.copyfile(uri, local)
        return
    bucket, key = split_s3(uri)
    client = client or s3_client()
    try:
        if expected_size is not None:
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] != expected_size:
                raise IntegrityError(f"{uri} does not match its manifest (size)")
        client.download_file(bucket, key, str(local), Config=_transfer_config())
    except IntegrityError:
        raise
    except Exception as exc:
        raise _wrap(exc, "download of", uri) from None


def read_bytes(uri: str, client=None) -> bytes:
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split_s3(uri)
    try:
        return (client or s3_client()).get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise _wrap(exc, "read of", uri) from None


def write_bytes(uri: str, data: bytes, client=None) -> None:
    """Write an object whole: readers see the old bytes or the new ones, never a mix."""
    if not is_s3(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)  # atomic on POSIX; an S3 PUT is atomic by itself
        return
    bucket, key = split_s3(uri)
    try:
        (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as exc:
        raise _wrap(exc, "write to", uri) from None


SMALL_OBJECT_BYTES = 64 << 20  # manifests (100,000 entries at most) and pointers are far smaller


def read_tagged(uri: str, client=None) -> tuple[bytes | None, str | None]:
    """(content, tag) of a small object, (None, None) when there is none; pass the tag to
    :func:`compare_and_swap`. The tag is the S3 ETag, locally the sha256 of the content. An object
    over :data:`SMALL_OBJECT_BYTES` is refused unread (manifests and pointers come from storage
    others can write)."""
    too_large = f"{uri} is larger than {SMALL_OBJECT_BYTES} bytes: not a manifest or pointer"
    tag = None
    if not is_s3(uri):
        try:
            with open(uri, "rb") as handle:
                data = handle.read(SMALL_OBJECT_BYTES + 1)
        except FileNotFoundError:
            return None, None
    else:
        bucket, key = split_s3(uri)
        try:
            reply = (client or s3_client()).get_object(Bucket=bucket, Key=key)
            if reply.get("ContentLength", 0) > SMALL_OBJECT_BYTES:
                reply["Body"].close()
                raise IntegrityError(too_large)
            data, tag = reply["Body"].read(SMALL_OBJECT_BYTES + 1), reply["ETag"]
        except IntegrityError:
            raise
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None, None
            raise _wrap(exc, "read of", uri) from None
    if len(data) > SMALL_OBJECT_BYTES:
        raise IntegrityError(too_large)
    return data, tag or hashlib.sha256(data).hexdigest()


def compare_and_swap(uri: str, data: bytes, expected: str | None, client=None) -> str:
    """Write ``data`` at ``uri`` only if it still has the tag ``expected`` (None: only if there is no
    object yet); returns the new tag. Raises :class:`ConflictError` when another writer got there first.

    S3: a conditional PUT (``If-Match`` on the ETag, ``If-None-Match: *`` for a new object), decided
    by the server. Locally: the read, compare and rename happen under an exclusive ``flock`` on a
    lock file beside the object, which every local writer of it takes.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        condition = {"IfMatch": expected} if expected is not None else {"IfNoneMatch": "*"}
        try:
            return (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise ConflictError(f"{uri} was changed by another writer since it was read") from None
            raise _wrap(exc, "conditional write to", uri) from None
    import fcntl

    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if read_tagged(uri)[1] != expected:
            raise ConflictError(f"{uri} was changed by another writer since it was read")
        write_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()


def _code(error: Exception) -> str | None:
    return getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(error, "response") else None


def exists(uri: str, client=None) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    try:
        (client or s3_client()).head_object(Bucket=bucket, Key=key)
        return True
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _wrap(exc, "lookup of", uri) from None
