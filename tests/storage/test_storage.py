"""The storage layer against a real SeaweedFS server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
import torch

from calgrpo.manifest import MANIFEST
from calgrpo.storage import (
    IncompleteOutputError,
    IntegrityError,
    StorageError,
    download_file,
    exists,
    fetch_folder,
    publish_folder,
    read_bytes,
    upload_file,
    write_bytes,
)
from calgrpo.storage.core import s3_client, split_s3
from calgrpo.storage.embedded import EmbeddedS3
from calgrpo.storage.folders import source_of
from tests.helpers import write_tree


def test_small_objects_roundtrip(s3_env, tmp_path) -> None:
    uri = f"{s3_env}/a/b.txt"
    assert not exists(uri)
    write_bytes(uri, b"hello")
    assert exists(uri) and read_bytes(uri) == b"hello"
    (tmp_path / "f.bin").write_bytes(b"\x00\x01" * 1000)
    upload_file(tmp_path / "f.bin", f"{s3_env}/f.bin")
    download_file(f"{s3_env}/f.bin", tmp_path / "back" / "f.bin")
    assert (tmp_path / "back" / "f.bin").read_bytes() == b"\x00\x01" * 1000


def test_large_file_goes_multipart_and_roundtrips(s3_env, tmp_path) -> None:
    data = os.urandom((64 << 20) + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    upload_file(tmp_path / "big.bin", f"{s3_env}/big.bin")
    bucket, key = split_s3(f"{s3_env}/big.bin")
    etag = s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert "-" in etag  # a multipart upload's ETag is "<hash>-<parts>"
    download_file(f"{s3_env}/big.bin", tmp_path / "big.back")
    assert hashlib.sha256((tmp_path / "big.back").read_bytes()).digest() == hashlib.sha256(data).digest()


def test_folder_publish_and_fetch_with_manifest(s3_env, tmp_path) -> None:
    source = write_tree(tmp_path / "src", {"a.txt": b"alpha", "sub/b.bin": os.urandom(1000)})
    manifest = publish_folder(source, f"{s3_env}/folder")
    assert set(manifest["files"]) == {"a.txt", "sub/b.bin"}
    fetched = fetch_folder(f"{s3_env}/folder", tmp_path / "dst")
    assert (fetched / "a.txt").read_bytes() == b"alpha"
    assert (fetched / "sub/b.bin").read_bytes() == (source / "sub/b.bin").read_bytes()
    assert (fetched / MANIFEST).exists()


def test_tampered_file_is_detected_and_nothing_is_kept(s3_env, tmp_path) -> None:
    manifest = publish_folder(write_tree(tmp_path / "src", {"a.txt": b"alpha", "b.txt": b"beta"}), f"{s3_env}/folder")
    write_bytes(source_of(f"{s3_env}/folder", manifest, "b.txt"), b"BETA")  # where the manifest says b.txt is
    with pytest.raises(IntegrityError, match="b.txt does not match its manifest"):
        fetch_folder(f"{s3_env}/folder", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fetch-")] == []


def test_half_written_folder_is_refused(s3_env, tmp_path) -> None:
    upload_file(write_tree(tmp_path, {"a.txt": b"x"}) / "a.txt", f"{s3_env}/partial/a.txt")
    with pytest.raises(IncompleteOutputError, match="no manifest.json"):
        fetch_folder(f"{s3_env}/partial", tmp_path / "dst")


def test_local_paths_work_the_same(tmp_path) -> None:
    source = write_tree(tmp_path / "src", {"x/y.txt": b"local"})
    publish_folder(source, str(tmp_path / "published"))
    assert (fetch_folder(str(tmp_path / "published"), tmp_path / "dst") / "x/y.txt").read_bytes() == b"local"
    with pytest.raises(IncompleteOutputError):
        fetch_folder(str(source), tmp_path / "dst2")


def test_wrong_credentials_are_rejected_without_leaking_them(s3_env, monkeypatch) -> None:
    write_bytes(f"{s3_env}/secret.txt", b"data")
    wrong = "definitely-not-the-secret-" + os.urandom(4).hex()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(StorageError, match="SignatureDoesNotMatch: the secret key is wrong") as caught:
        read_bytes(f"{s3_env}/secret.txt")
    assert wrong not in str(caught.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        write_bytes(f"{s3_env}/other.txt", b"x")


def test_server_stopped_mid_upload_gives_a_clear_error_and_publishes_nothing(tmp_path, monkeypatch) -> None:
    server = EmbeddedS3(tmp_path / "server").start()
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        source = write_tree(tmp_path / "src", {"a.bin": os.urandom(1 << 20), "big.bin": os.urandom(256 << 20)})
        errors: list[Exception] = []

        def publish() -> None:
            try:
                publish_folder(source, "s3://calgrpo/run/out")
            except Exception as exc:  # collected for the assertions below
                errors.append(exc)

        thread = threading.Thread(target=publish)
        thread.start()
        time.sleep(0.3)
        server.stop()
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], StorageError), errors
        assert "s3://calgrpo/run/out/" in str(errors[0])
        server = EmbeddedS3(tmp_path / "server").start()  # same data, new credentials
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        assert not exists(f"s3://calgrpo/run/out/{MANIFEST}")
    finally:
        server.stop()


def test_model_loads_from_s3_and_is_cached(s3_env, tmp_path, tiny_policy_folder, monkeypatch) -> None:
    from calgrpo.models.loading import load_policy

    monkeypatch.setenv("CALGRPO_CACHE", str(tmp_path / "cache"))
    publish_folder(tiny_policy_folder, f"{s3_env}/models/tiny")
    local = load_policy(str(tiny_policy_folder))
    remote = load_policy(f"{s3_env}/models/tiny")
    ids = torch.tensor([local.tokenizer("guess 0 to 7 hint 3")["input_ids"]])
    torch.testing.assert_close(local.model(ids).logits, remote.model(ids).logits)
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    load_policy(f"{s3_env}/models/tiny")
    assert cached[0].stat().st_mtime_ns == stamp  # fetched once
    with pytest.raises(IncompleteOutputError, match="s3 publish"):
        load_policy(f"{s3_env}/models/missing")


def test_embedded_server_rejects_a_too_short_bucket(tmp_path) -> None:
    with pytest.raises(StorageError, match="3 to 63"):
        EmbeddedS3(tmp_path, bucket="ab")


def test_s3_serve_command_prints_credentials_and_stops_cleanly(tmp_path, monkeypatch) -> None:
    import json
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "calgrpo.cli", "s3", "serve", "--dir", str(tmp_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        env = json.loads(process.stdout.readline())
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, env[key])
        write_bytes("s3://calgrpo/hello.txt", b"served")
        assert read_bytes("s3://calgrpo/hello.txt") == b"served"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert env["AWS_SECRET_ACCESS_KEY"] not in process.stderr.read()  # logs never show the secret
    with pytest.raises(StorageError):  # the server is gone
        read_bytes("s3://calgrpo/hello.txt")


@pytest.mark.parametrize(
    "name", ["/tmp/calgrpo-escaped.txt", "../escaped.txt", "sub/../../escaped.txt", "a//b", "./a", "a\\..\\b", ""]
)
def test_fetch_refuses_manifest_names_outside_the_destination(s3_env, tmp_path, name: str) -> None:
    # A hostile writer of the bucket edits the manifest: nothing may be written outside the fetch.
    from calgrpo.manifest import ManifestError

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("fine")
    publish_folder(source, f"{s3_env}/evil")
    payload = b"pwned"
    write_bytes(f"{s3_env}/evil/x", payload)
    entry = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    write_bytes(f"{s3_env}/evil/{MANIFEST}", json.dumps({"version": 1, "files": {name: entry}}).encode())
    with pytest.raises(ManifestError, match="refused file name"):
        fetch_folder(f"{s3_env}/evil", tmp_path / "deep" / "dst")
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not os.path.exists("/tmp/calgrpo-escaped.txt")
    assert not (tmp_path / "deep" / "dst").exists()
