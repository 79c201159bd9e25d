"""The pinned vLLM wheel for the contract tests: fetched once into the wheel cache, never installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calgrpo.errors import CalgrpoError
from calgrpo.rollout.vllm_source import PackageSource
from calgrpo.rollout.vllm_wheel import WHEEL_CACHE_ENV, fetch_wheel, read_pin

REPO = Path(__file__).resolve().parents[2]
GPU_DOCKERFILE = REPO / "images" / "gpu" / "Dockerfile"


def vllm_pin() -> str:
    """The vLLM version the GPU image installs (its one pin)."""
    return read_pin(GPU_DOCKERFILE.read_text(), "vllm")


@pytest.fixture(scope="session")
def vllm_wheel() -> Path:
    """The pinned vLLM wheel: the cached one, else ``pip download`` (about 340 MB). Skips only when
    it cannot be obtained (no package index); every check on a wheel that was obtained is real."""
    cache = Path(os.environ.get(WHEEL_CACHE_ENV) or REPO / ".cache" / "wheels")
    try:
        return fetch_wheel("vllm", vllm_pin(), cache)
    except CalgrpoError as error:
        pytest.skip(
            f"the vLLM {vllm_pin()} wheel could not be obtained, so its contract is unchecked: {error}"
        )


@pytest.fixture(scope="session")
def vllm_source(vllm_wheel: Path) -> PackageSource:
    return PackageSource.from_wheel(vllm_wheel)
