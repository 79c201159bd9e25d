"""The vLLM release the GPU image pins, as a wheel read without installing it (stdlib only).

vLLM cannot be installed beside the CPU build of torch, so the rollout engine's use of it is checked
against the source inside the pinned wheel instead (``calgrpo.rollout.vllm_contract``). The pin has
one home, ``images/gpu/Dockerfile`` (``ARG VLLM_SPEC=vllm==<version>``); the wheel is fetched once
with ``pip download`` (the configured package index, no dependencies) into a cache folder and only
ever opened as a zip file.

``python -m calgrpo.rollout.vllm_wheel --dockerfile images/gpu/Dockerfile --cache .cache/wheels``
fetches it (``make test`` does), printing the wheel's path.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from calgrpo.errors import CalgrpoError, InvalidInputError

WHEEL_CACHE_ENV = "CALGRPO_WHEEL_CACHE"
"""Environment variable naming the wheel cache folder (default: ``.cache/wheels`` in the checkout)."""


def read_pin(dockerfile_text: str, package: str) -> str:
    """The exact version of ``package`` in a Dockerfile line ``ARG <NAME>_SPEC=<package>==<version>``."""
    pattern = rf"^ARG\s+\w+_SPEC={re.escape(package)}==([0-9][0-9A-Za-z.+-]*)\s*$"
    found = re.findall(pattern, dockerfile_text, flags=re.MULTILINE)
    if len(found) != 1:
        raise InvalidInputError(
            f"expected one line 'ARG <NAME>_SPEC={package}==<version>' in the Dockerfile, found {len(found)}"
        )
    return found[0]


def cached_wheel(package: str, version: str, cache: Path) -> Path | None:
    """A wheel of ``package==version`` already in ``cache``, if there is one."""
    wheels = sorted(Path(cache).glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    return wheels[0] if wheels else None


def fetch_wheel(package: str, version: str, cache: Path, timeout_s: float = 1800.0) -> Path:
    """The wheel of ``package==version`` in ``cache``: the cached one, else ``pip download`` it
    (binary only, no dependencies; never installed). Raises CalgrpoError with pip's last words."""
    existing = cached_wheel(package, version, cache)
    if existing is not None:
        return existing
    Path(cache).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps",
               "--only-binary=:all:", "--dest", str(cache), "--quiet"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CalgrpoError(f"pip download {package}=={version} failed: {error}") from error
    wheel = cached_wheel(package, version, cache)
    if done.returncode != 0 or wheel is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CalgrpoError(
            f"pip download {package}=={version} failed (exit {done.returncode}): {' '.join(tail)}"
        )
    return wheel


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's ``Requires-Dist`` lines (its METADATA), e.g. ``torch==2.14.0``."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(metadata) != 1:
            raise InvalidInputError(f"{wheel.name} has {len(metadata)} METADATA files, expected one")
        text = archive.read(metadata[0]).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def required_pin(requirements: list[str], package: str) -> str | None:
    """The exact version a requirement list pins ``package`` to (unconditionally), if it does."""
    for requirement in requirements:
        found = re.fullmatch(rf"{re.escape(package)}\s*==\s*([0-9][0-9A-Za-z.+-]*)", requirement.strip())
        if found:
            return found.group(1)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the vLLM wheel the GPU image pins (never installed).")
    parser.add_argument("--dockerfile", type=Path, required=True, help="the GPU image's Dockerfile (the pin)")
    parser.add_argument("--cache", type=Path, required=True, help="folder the wheel is kept in")
    args = parser.parse_args(argv)
    try:
        version = read_pin(args.dockerfile.read_text(), "vllm")
        print(fetch_wheel("vllm", version, args.cache))
    except (OSError, CalgrpoError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
