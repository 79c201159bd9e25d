"""Publishing is atomic per version, readers read only what the current manifest names, concurrent
publishers cannot corrupt each other, and single files are read through their folder's manifest.
S3 cases run against the session's embedded SeaweedFS server."""

from __future__ import annotations

import threading

import pytest

from calgrpo.manifest import MANIFEST, is_complete
from calgrpo.storage import (
    ConflictError,
    IntegrityError,
    StorageError,
    core,
    fetch_file,
    fetch_folder,
    publish_folder,
    upload_file,
    write_bytes,
)
from calgrpo.storage.core import s3_client, split_s3
from calgrpo.storage.folders import GENERATIONS, source_of
from tests.helpers import write_tree


def _contents(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST}  # fmt: skip


@pytest.fixture(params=["local", "s3"])
def destination(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_env") + "/dataset"
    return str(tmp_path / "published" / "dataset")


def test_republishing_fewer_files_leaves_nothing_stale(destination, tmp_path) -> None:
    """Re-ingest without an eval split: the earlier eval.parquet must not survive beside the new
    manifest, for readers of the folder or of a file by name."""
    publish_folder(write_tree(tmp_path / "v1", {"train.parquet": b"old train", "eval.parquet": b"old eval"}),
                   destination)  # fmt: skip
    publish_folder(write_tree(tmp_path / "v2", {"train.parquet": b"new train"}), destination)
    assert _contents(fetch_folder(destination, tmp_path / "fetched")) == {"train.parquet": b"new train"}
    assert fetch_file(f"{destination}/train.parquet", tmp_path / "train").read_bytes() == b"new train"
    if destination.startswith("s3://"):
        with pytest.raises(IntegrityError, match="not in the manifest"):
            fetch_file(f"{destination}/eval.parquet", tmp_path / "eval")
    else:  # a local reader opens files by name: the folder holds exactly the new version
        assert _contents(tmp_path / "published" / "dataset") == {"train.parquet": b"new train"}


def test_a_writer_dying_mid_republish_leaves_the_previous_version_whole(
    destination, tmp_path, monkeypatch
) -> None:
    first = {"a.bin": b"A1" * 1000, "b.bin": b"B1" * 1000, "c.bin": b"C1" * 1000}
    publish_folder(write_tree(tmp_path / "v1", first), destination)
    upload, uploads = core.upload_file, []

    def die_after_one_file(*args, **kwargs):  # S3: the second upload kills the writer
        if uploads:
            raise StorageError("the writer died")
        uploads.append(args)
        return upload(*args, **kwargs)

    def die_before_the_manifest(folder):  # local: every file copied, then the writer dies
        raise StorageError("the writer died")

    monkeypatch.setattr("calgrpo.storage.folders.upload_file", die_after_one_file)
    monkeypatch.setattr("calgrpo.storage.folders.write_manifest", die_before_the_manifest)
    second = {"a.bin": b"A2" * 1000, "b.bin": b"B2" * 1000, "c.bin": b"C2" * 1000}
    with pytest.raises(StorageError, match="died"):
        publish_folder(write_tree(tmp_path / "v2", second), destination)
    assert _contents(fetch_folder(destination, tmp_path / "fetched")) == first
    if not destination.startswith("s3://"):
        parent = tmp_path / "published"
        assert sorted(p.name for p in parent.iterdir() if not p.name.endswith(".lock")) == ["dataset"]


def test_concurrent_s3_publishers_cannot_interleave(s3_env, tmp_path, monkeypatch) -> None:
    """Two publishers to one prefix, both past their first upload before either writes a manifest:
    one wins whole, the other is told and leaves nothing behind."""
    destination = f"{s3_env}/contended"
    both_uploading, upload = threading.Barrier(2), core.upload_file

    def upload_in_step(local, uri, *args, **kwargs):
        upload(local, uri, *args, **kwargs)
        if uri.endswith("/a.bin"):
            both_uploading.wait(timeout=60)

    monkeypatch.setattr("calgrpo.storage.folders.upload_file", upload_in_step)
    sources = [write_tree(tmp_path / name, {"a.bin": name.encode() * 100, "b.bin": name.encode() * 7})
               for name in ("one", "two")]  # fmt: skip
    outcomes: dict[str, object] = {}

    def publish(source) -> None:
        try:
            outcomes[source.name] = publish_folder(source, destination)
        except ConflictError as error:
            outcomes[source.name] = error

    threads = [threading.Thread(target=publish, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    conflicts = [name for name, outcome in outcomes.items() if isinstance(outcome, ConflictError)]
    assert len(outcomes) == 2 and len(conflicts) == 1, outcomes
    (winner,) = set(outcomes) - set(conflicts)
    assert _contents(fetch_folder(destination, tmp_path / "fetched")) == _contents(tmp_path / winner)
    assert len(_generations_holding_files(destination)) == 1  # the loser's generation was removed


def test_concurrent_local_publishers_each_leave_a_whole_version(tmp_path) -> None:
    destination = tmp_path / "out"
    sources = [write_tree(tmp_path / f"s{i}", {f"{i}.bin": bytes([i]) * 5000, "same.bin": bytes([i]) * 99})
               for i in range(6)]  # fmt: skip
    threads = [threading.Thread(target=publish_folder, args=(s, str(destination))) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert is_complete(destination)
    assert any(_contents(destination) == _contents(source) for source in sources)


def test_old_generations_are_removed_and_the_previous_one_kept(s3_env, tmp_path) -> None:
    destination = f"{s3_env}/many"
    for round_ in range(4):
        manifest = publish_folder(write_tree(tmp_path / f"v{round_}", {"x": str(round_).encode()}), destination)
    generations = _generations_holding_files(destination)
    assert len(generations) == 2 and manifest["generation"] in generations
    assert _contents(fetch_folder(destination, tmp_path / "fetched")) == {"x": b"3"}


def _generations_holding_files(destination: str) -> set[str]:
    bucket, prefix = split_s3(f"{destination}/{GENERATIONS}/")
    listed = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :].split("/")[0] for item in listed.get("Contents", [])}


def test_a_local_destination_that_is_not_a_calgrpo_output_is_refused_untouched(tmp_path) -> None:
    destination = write_tree(tmp_path / "home", {"notes.txt": b"mine"})
    with pytest.raises(StorageError, match="not a calgrpo output"):
        publish_folder(write_tree(tmp_path / "src", {"a": b"1"}), str(destination))
    assert _contents(destination) == {"notes.txt": b"mine"}


def test_single_files_are_read_through_their_folders_manifest(s3_env, tmp_path) -> None:
    manifest = publish_folder(write_tree(tmp_path / "src", {"problems.parquet": b"rows"}), f"{s3_env}/data")
    assert fetch_file(f"{s3_env}/data/problems.parquet", tmp_path / "p").read_bytes() == b"rows"
    write_bytes(source_of(f"{s3_env}/data", manifest, "problems.parquet"), b"forged rows")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        fetch_file(f"{s3_env}/data/problems.parquet", tmp_path / "p2")
    write_bytes(f"{s3_env}/data/extra.parquet", b"planted")  # beside the manifest, not in it
    with pytest.raises(IntegrityError, match="not in the manifest"):
        fetch_file(f"{s3_env}/data/extra.parquet", tmp_path / "p3")


def test_a_lone_file_is_verified_by_the_checksum_recorded_at_upload(s3_env, tmp_path) -> None:
    (tmp_path / "attempts.parquet").write_bytes(b"attempts")
    upload_file(tmp_path / "attempts.parquet", f"{s3_env}/inputs/attempts.parquet")
    assert fetch_file(f"{s3_env}/inputs/attempts.parquet", tmp_path / "a").read_bytes() == b"attempts"
    write_bytes(f"{s3_env}/inputs/attempts.parquet", b"replaced")  # a plain PUT records no checksum
    with pytest.raises(IntegrityError, match="cannot be verified"):
        fetch_file(f"{s3_env}/inputs/attempts.parquet", tmp_path / "b")


def test_cleanup_never_touches_a_generation_still_being_uploaded(s3_env, tmp_path, monkeypatch) -> None:
    """B reads the manifest A just switched, and uploads while A cleans up: B's generation, not yet
    published, must survive A's clean-up, so B's version (its manifest PUT succeeds) fetches whole."""
    from calgrpo.storage import folders

    destination = f"{s3_env}/overlap"
    publish_folder(write_tree(tmp_path / "v0", {"x": b"0"}), destination)
    publish_folder(write_tree(tmp_path / "v1", {"x": b"1"}), destination)
    a_switched, b_uploaded, a_cleaned = threading.Event(), threading.Event(), threading.Event()
    cleanup, upload = folders._delete_superseded, core.upload_file

    def cleanup_of_a_waits_for_b(*args):
        if threading.current_thread().name == "A":
            a_switched.set()
            assert b_uploaded.wait(timeout=60)
            cleanup(*args)
            a_cleaned.set()
        else:
            cleanup(*args)

    def upload_of_b_waits_for_a(local, uri, *args, **kwargs):
        upload(local, uri, *args, **kwargs)
        if threading.current_thread().name == "B":
            b_uploaded.set()
            assert a_cleaned.wait(timeout=60)

    monkeypatch.setattr(folders, "_delete_superseded", cleanup_of_a_waits_for_b)
    monkeypatch.setattr(folders, "upload_file", upload_of_b_waits_for_a)
    a = threading.Thread(target=publish_folder, args=(write_tree(tmp_path / "a", {"x": b"A"}), destination), name="A")
    a.start()
    assert a_switched.wait(timeout=60)
    b = threading.Thread(target=publish_folder, args=(write_tree(tmp_path / "b", {"x": b"B"}), destination), name="B")
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)
    assert _contents(fetch_folder(destination, tmp_path / "fetched")) == {"x": b"B"}


def test_hostile_sizes_are_refused_before_they_are_read(s3_env, tmp_path, monkeypatch) -> None:
    """A file bigger than its manifest entry is refused before downloading it; a manifest bigger
    than any real one is refused unread."""
    manifest = publish_folder(write_tree(tmp_path / "src", {"a.txt": b"tiny"}), f"{s3_env}/sized")
    write_bytes(source_of(f"{s3_env}/sized", manifest, "a.txt"), b"x" * (1 << 20))
    with pytest.raises(IntegrityError, match=r"does not match its manifest \(size\)$"):
        fetch_file(f"{s3_env}/sized/a.txt", tmp_path / "a")
    with pytest.raises(IntegrityError, match=r"\(size\)$"):
        fetch_folder(f"{s3_env}/sized", tmp_path / "dst")
    assert not (tmp_path / "a").exists() and not (tmp_path / "dst").exists()
    monkeypatch.setattr(core, "SMALL_OBJECT_BYTES", 1000)
    write_bytes(f"{s3_env}/sized/{MANIFEST}", b"{" + b" " * 2000 + b"}")
    with pytest.raises(IntegrityError, match="larger than 1000 bytes"):
        fetch_folder(f"{s3_env}/sized", tmp_path / "dst")
