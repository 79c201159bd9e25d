"""Files and folders at local paths or s3:// URIs, with manifests; and the embedded S3 server."""

from calgrpo.storage.core import (
    ConflictError,
    IncompleteOutputError,
    IntegrityError,
    StorageError,
    download_file,
    exists,
    is_s3,
    read_bytes,
    upload_file,
    write_bytes,
)
from calgrpo.storage.folders import fetch_file, fetch_folder, publish_folder

__all__ = [
    "ConflictError",
    "fetch_file",
    "IncompleteOutputError",
    "IntegrityError",
    "StorageError",
    "download_file",
    "exists",
    "fetch_folder",
    "is_s3",
    "publish_folder",
    "read_bytes",
    "upload_file",
    "write_bytes",
]
