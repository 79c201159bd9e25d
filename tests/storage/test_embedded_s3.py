"""The embedded S3 server (real SeaweedFS on loopback): only signed S3 reaches the data, one bucket,
and weed's life is tied to the process that started it. Processes are ended by the PIDs started here."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from calgrpo.storage import read_bytes, write_bytes
from calgrpo.storage.core import StorageError
from calgrpo.storage.embedded import EmbeddedS3

GRPC_PORTS = ("master.port.grpc", "volume.port.grpc", "filer.port.grpc", "s3.port.grpc", "admin.port.grpc")
HTTP2_PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
)  # + empty SETTINGS


def _unsigned(method: str, url: str, data: bytes | None = None, unix_socket: str | None = None) -> int:
    """HTTP status of a request carrying no signature, token or certificate (0: connection refused)."""
    try:
        if unix_socket is not None:
            connection = http.client.HTTPConnection("localhost", timeout=10)
            connection.sock = socket.socket(socket.AF_UNIX)
            try:
                connection.sock.connect(unix_socket)
                connection.request(method, url, body=data)
                return connection.getresponse().status
            finally:
                connection.close()
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, method=method), timeout=10
        ) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except ConnectionRefusedError:
        return 0


def _client(server: EmbeddedS3):
    return boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name="us-east-1",
    )  # fmt: skip


def _chunk_ids(server: EmbeddedS3, key: str) -> list[str]:
    """The volume file ids holding an S3 object, read through weed shell with the server's own config."""
    ports = server.ports
    config_dir = getattr(server, "private_dir", None) or server.data_dir
    shell = subprocess.run(
        [server.process.args[0], "shell", f"-master=127.0.0.1:{ports['master.port']}.{ports['master.port.grpc']}",
         f"-filer=127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}"],
        input=f"fs.meta.cat /buckets/{server.bucket}/{key}\n", capture_output=True, text=True, timeout=60,
        cwd=config_dir, env={**os.environ, "HOME": str(config_dir)},
    )  # fmt: skip
    return [json.loads(line.split(":", 1)[1].rstrip(",")) for line in shell.stdout.splitlines()
            if line.strip().startswith('"fileId"')]  # fmt: skip


def _grpc_answers_without_certificate(port: int | None = None, unix_socket: str | None = None) -> bool:
    """Whether a gRPC listener talks HTTP/2 to a client with no certificate, in plaintext or over TLS."""

    def connect() -> socket.socket:
        if unix_socket is not None:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(unix_socket)
            return sock
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    with connect() as sock:
        sock.sendall(HTTP2_PREFACE)
        plaintext = sock.recv(9)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with connect() as raw, context.wrap_socket(raw) as sock:
            sock.sendall(HTTP2_PREFACE)
            over_tls = sock.recv(9)
    except (ssl.SSLError, ConnectionError):
        over_tls = b""
    return plaintext[3:4] == b"\x04" or over_tls[3:4] == b"\x04"  # a SETTINGS frame came back


def test_unsigned_writes_to_filer_volume_and_master_are_refused(s3_server) -> None:
    client, key = _client(s3_server), f"guarded-{os.urandom(4).hex()}"
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"genuine")
    ports, host = s3_server.ports, "http://127.0.0.1"
    chunks = _chunk_ids(s3_server, key)
    assert chunks, "weed shell with the server's own certificate must see the object"
    filer = f"{host}:{ports['filer.port']}/buckets/{s3_server.bucket}/{key}"
    assert _unsigned("PUT", filer, b"forged") not in range(200, 300)
    assert _unsigned("GET", filer) not in range(200, 300)
    assert _unsigned("PUT", f"{host}:{ports['filer.port']}/buckets/other/x", b"forged") not in range(200, 300)
    for chunk in chunks:
        volume = f"{host}:{ports['volume.port']}/{chunk}"
        assert _unsigned("PUT", volume, b"forged") == 401
        assert _unsigned("GET", volume) == 401
        assert _unsigned("DELETE", volume) == 401
    for path in ("/dir/assign", f"/dir/lookup?fileId={chunks[0]}"):  # the master hands out volume JWTs
        assert _unsigned("GET", f"{host}:{ports['master.port']}{path}") not in range(200, 300)
    sockets = list(Path(getattr(s3_server, "private_dir", "/nonexistent")).glob("*.sock"))
    sockets.append(Path(f"/tmp/seaweedfs-filer-{ports['filer.port']}.sock"))  # weed's default
    for path in sockets:
        if path.exists():
            status = _unsigned("PUT", f"/buckets/{s3_server.bucket}/{key}", b"forged", unix_socket=str(path))
            assert status not in range(200, 300), path
    assert client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"genuine"
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [s3_server.bucket]


def test_grpc_ports_and_sockets_need_the_servers_certificate(s3_server) -> None:
    for name in GRPC_PORTS:
        assert not _grpc_answers_without_certificate(port=s3_server.ports[name]), name
        component = name.split(".")[0]
        unix_socket = f"/tmp/seaweedfs-{component}-grpc-{s3_server.ports[name]}.sock"  # fixed by weed mini
        if os.path.exists(unix_socket):
            assert not _grpc_answers_without_certificate(unix_socket=unix_socket), unix_socket
            assert os.stat(unix_socket).st_mode & 0o077 == 0, unix_socket  # connectable by its owner only


def test_requests_to_another_bucket_fail_naming_it_and_create_nothing(s3_env, s3_server) -> None:
    other = f"{s3_server.bucket}-typo"
    with pytest.raises(StorageError, match=f"s3://{other}/x"):
        write_bytes(f"s3://{other}/x", b"data")
    with pytest.raises(StorageError, match=f"s3://{other}/x"):
        read_bytes(f"s3://{other}/x")
    client = _client(s3_server)
    with pytest.raises(Exception, match="AccessDenied"):
        client.create_bucket(Bucket=other)
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [s3_server.bucket]
    write_bytes(f"{s3_env}/fine", b"data")  # the configured bucket still works
    assert read_bytes(f"{s3_env}/fine") == b"data"


def test_aws_credentials_in_the_environment_do_not_become_an_identity(tmp_path, monkeypatch) -> None:
    # SeaweedFS makes AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of its environment an Admin identity.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "inherited" + os.urandom(4).hex())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "inherited-secret-" + os.urandom(8).hex())
    monkeypatch.setenv("S3_BUCKET", "inherited-bucket")
    with EmbeddedS3(tmp_path) as server:
        inherited = boto3.client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        )  # fmt: skip
        with pytest.raises(Exception, match="InvalidAccessKeyId"):
            inherited.list_buckets()
        assert [b["Name"] for b in _client(server).list_buckets()["Buckets"]] == [server.bucket]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie nobody has reaped yet holds nothing


def _wait_gone(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_weed_dies_with_a_sigkilled_parent_and_the_data_dir_is_reusable(tmp_path) -> None:
    parent_code = textwrap.dedent(f"""
        import sys, time, boto3
        from calgrpo.storage.embedded import EmbeddedS3
        server = EmbeddedS3({str(tmp_path / "server")!r}).start()
        boto3.client("s3", **{{"endpoint_url": server.endpoint, "aws_access_key_id": server.access_key,
                     "aws_secret_access_key": server.secret_key, "region_name": "us-east-1"}}).put_object(
            Bucket="calgrpo", Key="kept", Body=b"survives")
        print(server.process.pid, getattr(server, "private_dir", ""), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    weed_pid, private_dir = None, ""
    try:
        fields = parent.stdout.readline().split()  # weed's pid, the private folder (new code only)
        assert fields, "the parent process did not start its server"
        weed_pid, private_dir = int(fields[0]), (fields[1:] or [""])[0]
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _wait_gone(weed_pid), f"weed (pid {weed_pid}) outlived its SIGKILLed parent"
        with EmbeddedS3(tmp_path / "server") as server:  # same data dir, new credentials
            assert _client(server).get_object(Bucket="calgrpo", Key="kept")["Body"].read() == b"survives"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        parent.stdout.close()
        if weed_pid is not None and not _gone(weed_pid):
            os.kill(weed_pid, signal.SIGKILL)
        if private_dir:  # the killed parent could not remove its private folder
            shutil.rmtree(private_dir, ignore_errors=True)


def test_a_server_started_from_a_thread_outlives_that_thread(tmp_path) -> None:
    # PR_SET_PDEATHSIG follows the forking thread: weed must not die when a worker thread ends.
    servers: list[EmbeddedS3] = []
    starter = threading.Thread(target=lambda: servers.append(EmbeddedS3(tmp_path).start()))
    starter.start()
    starter.join(timeout=60)
    (server,) = servers
    try:
        time.sleep(2.0)  # a SIGTERM from the kernel would have arrived and been acted on by now
        server.check()
        _client(server).put_object(Bucket=server.bucket, Key="alive", Body=b"yes")
    finally:
        server.stop()


def test_a_data_dir_in_use_is_refused_naming_the_server(tmp_path) -> None:
    with EmbeddedS3(tmp_path) as first:
        started = time.monotonic()
        with pytest.raises(
            StorageError, match=f"in use by another SeaweedFS server \\(weed pid {first.process.pid}\\)"
        ):
            EmbeddedS3(tmp_path).start()
        assert time.monotonic() - started < 20  # a clear error after a short wait, not a hang
        assert first.alive()
        first.check()


def test_check_reports_a_dead_weed_with_its_log(tmp_path) -> None:
    with EmbeddedS3(tmp_path) as server:
        assert server.alive()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        assert not server.alive()
        with pytest.raises(StorageError, match=f"died .*; see {re.escape(str(tmp_path / 'weed.log'))}"):
            server.check()


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]  # fmt: skip


def test_s3_serve_exits_nonzero_naming_the_log_when_weed_dies(tmp_path) -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "calgrpo.cli", "s3", "serve", "--dir", str(tmp_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "AWS_ENDPOINT_URL" in json.loads(serve.stdout.readline())
        (weed_pid,) = _children(serve.pid)
        os.kill(weed_pid, signal.SIGKILL)
        assert serve.wait(timeout=30) == 1
        stderr = serve.stderr.read()
        assert "died" in stderr and str(tmp_path / "weed.log") in stderr, stderr
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)
        serve.stdout.close()
        serve.stderr.close()
