"""Container images the components run in: one variable picks the repository and tag.

``CALGRPO_IMAGE_REPO`` (default ``calgrpo``) and ``CALGRPO_IMAGE_TAG`` (default: the package
version) are read when components are defined, i.e. at compile time: images are
``<repo>/cpu:<tag>`` (ingest, model fetching, shard planning and merging, promotion, the TrainJob
launcher), ``<repo>/gpu:<tag>`` (rollout, train, evaluate on GPU nodes) and ``<repo>/sandbox:<tag>``
(verify). ``make images`` builds the three from ``images/`` under the same names. Never ``latest``:
a pipeline names exactly what it runs.
"""

from __future__ import annotations

import os

from calgrpo import __version__


def image(kind: str) -> str:
    repository = os.environ.get("CALGRPO_IMAGE_REPO", "calgrpo").rstrip("/")
    tag = os.environ.get("CALGRPO_IMAGE_TAG", __version__)
    if tag == "latest":
        raise ValueError("CALGRPO_IMAGE_TAG=latest is refused: pin a version so runs are reproducible")
    return f"{repository}/{kind}:{tag}"


CPU_IMAGE = image("cpu")
GPU_IMAGE = image("gpu")
SANDBOX_IMAGE = image("sandbox")
