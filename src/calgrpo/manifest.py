"""Manifests: a folder output is complete only once ``manifest.json`` (file list + sha256) exists.

Writers put every file in place first and the manifest last, so a reader that finds a manifest whose
hashes match knows the folder is whole; a crash mid-write leaves a folder without one, which readers
skip. (The S3 storage layer will publish the same manifest format.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


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
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError):
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
