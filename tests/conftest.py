"""Shared test set-up: GPU tests skip with a reason on CPU; a session-wide tiny policy on disk."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_guess_policy


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a parameter id that says gpu
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Models built or converted by the tests (tiny:*, GGUF) are cached in the session's temp folder,
    never in the user's cache (subprocesses inherit it)."""
    import os

    folder = tmp_path_factory.mktemp("calgrpo-cache")
    previous = os.environ.get("CALGRPO_CACHE")
    os.environ["CALGRPO_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CALGRPO_CACHE", None)
    else:
        os.environ["CALGRPO_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_policy_folder(tmp_path_factory: pytest.TempPathFactory):
    """Folder of a tiny guess-task policy (8 numbers), built once per session."""
    folder = tmp_path_factory.mktemp("tiny_policy")
    tiny_guess_policy(folder)
    return folder


@pytest.fixture
def tiny_policy(tiny_policy_folder):
    """A fresh copy of the tiny policy, loaded through load_policy (tests may train it)."""
    from calgrpo.models.loading import load_policy

    policy = load_policy(str(tiny_policy_folder))
    policy.model.eval()
    return policy


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """One embedded SeaweedFS S3 server (loopback, generated credentials) for the test session."""
    from calgrpo.storage.embedded import EmbeddedS3

    with EmbeddedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point boto3 at the session's embedded server for one test; yields a unique s3:// prefix."""
    import secrets

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    yield f"s3://{s3_server.bucket}/test-{secrets.token_hex(4)}"
