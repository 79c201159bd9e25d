"""Published folders: every publish is one atomic version, readers read only what the manifest names.

**S3.** A publish uploads its files under a fresh generation, ``URI/.calgrpo-gen/<generation>/``,
then writes ``URI/manifest.json`` (naming the generation) with a conditional PUT against the
manifest it read when it started. Until that PUT the new files are invisible; after it, readers
fetch exactly the files it lists, from its generation. Files of an earlier publish can never
appear beside a newer manifest, a writer dying mid-publish leaves the previous version whole, and
of two concurrent publishers the second to finish gets :class:`ConflictError` (its generation is
deleted again) instead of interleaving files. The previous generation is kept for readers still
fetching it; the one before it is deleted (only generations that were once current are ever
deleted, so a concurrent publisher's upload in progress is never touched).

**Local.** A publish builds the folder beside its destination and swaps it in with one
``renameat2(RENAME_EXCHANGE)``, under a ``flock`` that every local publisher of that destination
takes; a destination holding files but no manifest (not a calgrpo output) is refused, never wiped.

Single files of a published folder are read through its manifest (:func:`fetch_file`).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from calgrpo.manifest import MANIFEST, build_manifest, checked_entries, sha256_file, write_manifest
from calgrpo.storage.core import (
    ConflictError,
    IncompleteOutputError,
    IntegrityError,
    StorageError,
    _wrap,
    compare_and_swap,
    download_file,
    is_s3,
    join,
    read_tagged,
    s3_client,
    split_s3,
    upload_file,
)

log = logging.getLogger(__name__)

GENERATIONS = ".calgrpo-gen"
_GENERATION = re.compile(r"[0-9A-Za-z_-]{1,64}")
_FETCH_TRIES = 3


def publish_folder(local: str | Path, uri: str) -> dict:
    """Publish a local folder at ``uri`` as one new version; returns its manifest."""
    local = Path(local)
    if not is_s3(uri) and Path(uri).resolve() == local.resolve():
        raise StorageError(f"cannot publish {local} onto itself")
    if is_s3(uri):
        return _publish_s3(local, uri)
    return _publish_local(local, Path(uri))


def _publish_s3(local: Path, uri: str) -> dict:
    client = s3_client()
    manifest_uri = join(uri, MANIFEST)
    previous_raw, previous_tag = read_tagged(manifest_uri, client)
    generation = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
    previous_generation = _field(previous_raw, "generation")
    manifest = {**build_manifest(local), "version": 2, "generation": generation,
                "previous_generation": previous_generation}  # fmt: skip
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    try:
        for name, entry in manifest["files"].items():
            upload_file(local / name, join(uri, GENERATIONS, generation, name), client, entry["sha256"])
        compare_and_swap(manifest_uri, body, previous_tag, client)
    except ConflictError:
        _forget(uri, generation)
        raise ConflictError(
            f"another publish to {uri} finished while this one ran; nothing of this one is visible"
        ) from None
    except BaseException:
        _forget(uri, generation)  # a writer killed outright leaves it to the next publish
        raise
    _delete_superseded(uri, previous_raw, client)
    log.info("published %d files to %s (generation %s)", len(manifest["files"]), uri, generation)
    return manifest


def _field(raw: bytes | None, key: str) -> str | None:
    """A generation name from a manifest's bytes (None when absent or not a valid name)."""
    try:
        value = json.loads(raw).get(key) if raw else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and _GENERATION.fullmatch(value) else None


def _delete_superseded(uri: str, previous_raw: bytes | None, client) -> None:
    """Delete the version two publishes back (the previous one stays for readers still fetching
    it), or the plain-named files of a previous manifest from before generations.

    Only generations that were once current are deleted, never by listing: a concurrent
    publisher's generation, still being uploaded, must survive until its manifest PUT decides."""
    bucket = split_s3(uri)[0]
    try:
        superseded = _field(previous_raw, "previous_generation")
        if superseded is not None:
            _delete_prefix(join(uri, GENERATIONS, superseded) + "/", client)
        elif previous_raw and _field(previous_raw, "generation") is None:
            old = checked_entries(json.loads(previous_raw), join(uri, MANIFEST))
            keys = [{"Key": split_s3(join(uri, name))[1]} for name in old]
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000]})
    except Exception as exc:  # the publish itself succeeded: an old version is only left behind
        error = _wrap(exc, "cleanup of", uri)
        log.warning("published %s; removing the superseded version failed: %s", uri, error)


def _forget(uri: str, generation: str) -> None:
    """Best effort: remove an unpublished generation (the next publish removes what is left)."""
    try:  # one quick try: the failure that got us here may be the server itself
        _delete_prefix(join(uri, GENERATIONS, generation) + "/", s3_client(max_attempts=1, connect_timeout=2))
    except Exception as exc:
        log.warning("could not remove the unpublished generation %s of %s: %s", generation, uri, exc)


def _delete_prefix(prefix_uri: str, client) -> None:
    bucket, prefix = split_s3(prefix_uri)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def _publish_local(local: Path, destination: Path) -> dict:
    import fcntl

    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination.parent / f".{destination.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if destination.exists() and any(destination.iterdir()) and not (destination / MANIFEST).is_file():
            raise StorageError(
                f"{destination} holds files but no {MANIFEST}: it is not a calgrpo output; publish into "
                "an empty or new folder (nothing was changed)"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.publish-", dir=destination.parent))
        try:
            shutil.copytree(local, staging, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(MANIFEST, MANIFEST + ".*"))  # fmt: skip
            manifest = write_manifest(staging)
            staging.chmod(0o755)  # mkdtemp's 0700 would make the published folder private
            _swap_in(staging, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # after the swap: the previous version
    log.info("published %d files to %s", len(manifest["files"]), destination)
    return manifest


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap_in(staging: Path, destination: Path) -> None:
    """Put ``staging`` at ``destination`` in one step; the previous folder ends up at ``staging``."""
    if not destination.exists():
        os.rename(staging, destination)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        paths = os.fsencode(staging), os.fsencode(destination)
        result = renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise StorageError(f"could not swap the new version into {destination}: {os.strerror(code)}")
    # No atomic exchange on this filesystem: two renames (a reader may briefly find no folder,
    # never a mix of two versions).
    aside = staging.with_name(staging.name + ".old")
    os.rename(destination, aside)
    os.rename(staging, destination)
    os.rename(aside, staging)


def read_manifest(uri: str, client=None) -> tuple[dict, dict[str, dict]]:
    """(manifest, its checked ``files``) of a published folder; refuses a missing or hostile one."""
    manifest_uri = join(uri, MANIFEST)
    raw, _ = read_tagged(manifest_uri, client)
    if raw is None:
        raise IncompleteOutputError(f"{uri} has no {MANIFEST}: it is unfinished or not a calgrpo output")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"{manifest_uri} is not valid JSON") from None
    files = checked_entries(manifest, manifest_uri)  # before anything is downloaded
    generation = manifest.get("generation")
    if generation is not None and not (isinstance(generation, str) and _GENERATION.fullmatch(generation)):
        raise IntegrityError(f"{manifest_uri}: malformed generation {generation!r}")
    return manifest, files


def source_of(uri: str, manifest: dict, name: str) -> str:
    """Where the file ``name`` of the version ``manifest`` describes is stored."""
    generation = manifest.get("generation")
    return join(uri, GENERATIONS, generation, name) if generation else join(uri, name)


def fetch_folder(uri: str, local: str | Path) -> Path:
    """Download the current version of a published folder into ``local``, every file verified; the
    folder appears whole or not at all. A version replaced while it is fetched is fetched again."""
    client = s3_client() if is_s3(uri) else None
    for attempt in range(_FETCH_TRIES):
        manifest, files = read_manifest(uri, client)
        try:
            return _fetch_version(uri, manifest, files, Path(local), client)
        except StorageError:
            if attempt + 1 == _FETCH_TRIES or read_manifest(uri, client)[0] == manifest:
                raise
            log.info("%s was republished while it was fetched; fetching the new version", uri)
    raise AssertionError("unreachable")


def _fetch_version(uri: str, manifest: dict, files: dict[str, dict], local: Path, client) -> Path:
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=local.parent))  # same filesystem: atomic rename
    try:
        for name, entry in files.items():
            target = staging / name
            if not target.resolve().is_relative_to(staging.resolve()):  # belt and braces: symlinks
                raise IntegrityError(f"{join(uri, MANIFEST)}: {name!r} resolves outside the destination")
            download_file(source_of(uri, manifest, name), target, client, expected_size=entry["size"])
            _check(target, entry, join(uri, name))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if local.exists():
            shutil.rmtree(local)
        os.replace(staging, local)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return local


def _check(path: Path, entry: dict, uri: str) -> None:
    if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
        raise IntegrityError(f"{uri} does not match its manifest (size or sha256)")


def fetch_file(uri: str, local: str | Path) -> Path:
    """One file of a published folder, read through the folder's manifest and verified.

    ``s3://bucket/run/data/train.parquet`` is the file ``train.parquet`` of the folder
    ``s3://bucket/run/data``. A file the manifest does not list is refused (stale or foreign); a
    file in a folder without a manifest must carry the sha256 that :func:`upload_file` records.
    Local paths are the caller's own files and are used as they are.
    """
    local = Path(local)
    if not is_s3(uri):
        shutil.copyfile(uri, local)
        return local
    client = s3_client()
    folder, _, name = uri.rpartition("/")
    try:
        manifest, files = read_manifest(folder, client)
    except IncompleteOutputError:
        return _fetch_checksummed(uri, local, client)
    if name not in files:
        raise IntegrityError(f"{uri} is not in the manifest of {folder}: a stale or foreign file")
    download_file(source_of(folder, manifest, name), local, client, expected_size=files[name]["size"])
    _check(local, files[name], uri)
    return local


def _fetch_checksummed(uri: str, local: Path, client) -> Path:
    bucket, key = split_s3(uri)
    try:
        recorded = client.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
    except Exception as exc:
        raise _wrap(exc, "lookup of", uri) from None
    if recorded is None:
        raise IntegrityError(
            f"{uri} cannot be verified: its folder has no {MANIFEST} and the object carries no sha256; "
            "publish the folder with `calgrpo s3 publish` (or upload it with calgrpo)"
        )
    download_file(uri, local, client)
    if sha256_file(local) != recorded:
        raise IntegrityError(f"{uri} does not match the sha256 recorded when it was uploaded")
    return local


def local_copy(uri: str | Path, scratch: str | Path) -> Path:
    """``uri`` itself when local, else a verified download of it (:func:`fetch_file`) into ``scratch``."""
    if not is_s3(uri):
        return Path(uri)
    name = str(uri).rsplit("/", 1)[-1]
    target = Path(scratch, hashlib.sha256(str(uri).encode()).hexdigest()[:16] + "-" + name)
    return fetch_file(str(uri), target)


def content_fingerprint(uri: str | Path) -> str | None:
    """sha256 over a folder's file list (relative names, sizes, sha256s), manifest excluded.

    The same content has the same fingerprint wherever it is stored (a local folder, its published
    copy on S3, a registry version), so it identifies *what* was evaluated or promoted, not where.
    None for anything that is not a folder (a hub id, a missing path).
    """
    uri = str(uri)
    if is_s3(uri):
        try:
            return fingerprint_files(read_manifest(uri)[1])
        except IncompleteOutputError:
            return None
    if Path(uri).is_dir():
        return fingerprint_files(build_manifest(Path(uri))["files"])
    return None


def fingerprint_files(files: dict) -> str:
    """The fingerprint of a manifest's ``files`` mapping (see :func:`content_fingerprint`)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
