"""Manifests: a folder output is complete only once ``manifest.json`` (file list + sha256) exists.

Writers put every file in place first and the manifest last, so a reader that finds a manifest whose
hashes match knows the folder is whole; a crash mid-write leaves a folder without one, which readers
skip. (The S3 storage layer will publish the same manifest format.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from calgrpo.errors import CalgrpoError

MANIFEST = "manifest.json"
MAX_MANIFEST_ENTRIES = 100_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(CalgrpoError, ValueError):
    """A manifest that is malformed or names a file outside its own folder."""


def checked_entries(manifest: object, where: str = "manifest") -> dict[str, dict]:
    """The manifest's ``files``, each name a plain relative path inside the folder; raises otherwise.

    A manifest is read from storage that others can write: a name that is absolute, holds ``..``,
    a backslash, a NUL or an empty part would make a reader write (or read) outside the folder, so
    the whole manifest is refused before a single file is touched.
    """
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or len(files) > MAX_MANIFEST_ENTRIES:
        raise ManifestError(f"{where}: malformed (no 'files' mapping, or more than {MAX_MANIFEST_ENTRIES})")
    for name, entry in files.items():
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if (
            not parts
            or name.startswith("/")
            or any(part in ("", ".", "..") for part in name.split("/"))
            or "\\" in name
            or "\0" in name
            or name == MANIFEST
        ):
            raise ManifestError(
                f"{where}: refused file name {name!r} (absolute, '..', or not a plain relative path)"
            )
        if (
            not isinstance(entry, dict)
            or type(entry.get("size")) is not int
            or entry["size"] < 0
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.fullmatch(entry["sha256"])
        ):
            raise ManifestError(f"{where}: malformed entry for {name!r}")
    return files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(folder: Path) -> dict:
    """``{"version": 1, "files": {relative path: {"size", "sha256"}}}`` for every file but the manifest."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(MANIFEST + ".")
    }
    return {"version": 1, "files": files}


def write_manifest(folder: Path) -> dict:
    """Hash every file under ``folder`` and write the manifest atomically (rename into place)."""
    manifest = build_manifest(folder)
    temporary = folder / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(folder / MANIFEST)
    return manifest


def is_complete(folder: Path) -> bool:
    """True when the manifest exists and every listed file has its recorded size and hash."""
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        files = checked_entries(json.loads(path.read_text()), str(path))
    except ValueError:
        return False
    for name, entry in files.items():
        target = folder / name
        if (
            not target.is_file()
            or target.stat().st_size != entry["size"]
            or sha256_file(target) != entry["sha256"]
        ):
            return False
    return True
