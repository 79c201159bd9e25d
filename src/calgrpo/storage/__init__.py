"""Files and folders at local paths or s3:// URIs, with manifests; and the embedded S3 server."""

from calgrpo.storage.core import (
    IncompleteOutputError,
    IntegrityError,
    StorageError,
    download_file,
    exists,
    fetch_folder,
    is_s3,
    publish_folder,
    read_bytes,
    upload_file,
    write_bytes,
)

__all__ = [
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
