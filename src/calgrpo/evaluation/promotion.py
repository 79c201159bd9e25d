"""A model registry on the storage layer, and the promotion gate (``calgrpo promote``).

Layout under REGISTRY: ``models/<name>/versions/<version>/`` holds ``model/`` (a published folder
of its own), the evaluation's ``metrics.json`` and ``decision.json`` (published with a manifest).
``models/<name>/current.json`` names the promoted version and is written last, in one atomic write,
so two promotions racing leave it naming one complete version or the other, never a torn file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calgrpo.errors import CalgrpoError


@dataclass(frozen=True)
class PromoteConfig:
    """Register a candidate model and promote it if its evaluation clears the margin."""

    model: str
    """Candidate model folder (local or s3:// published folder)."""
    evaluation: str
    """Output folder of ``calgrpo evaluate`` for this candidate against the current model."""
    registry: str
    """Registry root (local path or s3://bucket/prefix)."""
    name: str = "policy"
    """Model name in the registry."""
    margin: float = 0.0
    """Promote only if the lower 95% bound of V@K(candidate) - V@K(baseline) exceeds this."""
    first: bool = False
    """Allow promoting without a baseline comparison when the registry has no current version yet."""


def current_version(registry: str, name: str) -> dict[str, Any] | None:
    """The current pointer's content, or None when nothing was promoted yet."""
    from calgrpo.storage.core import exists, join, read_bytes

    pointer = join(registry, "models", name, "current.json")
    return json.loads(read_bytes(pointer)) if exists(pointer) else None


def resolve_pointer(uri: str) -> str:
    """A registry pointer (``.../models/<name>/current.json``) -> the model it names; other URIs unchanged.

    Lets a scheduled retraining start from what is serving: ``<registry>/models/policy/current.json``.
    """
    from calgrpo.storage.core import exists, read_bytes

    if not uri.endswith("/current.json"):
        return uri
    if not exists(uri):
        raise CalgrpoError(f"{uri}: no such registry pointer (nothing promoted yet?)")
    return json.loads(read_bytes(uri))["model"]


def decide(metrics: dict[str, Any], margin: float, first: bool, has_current: bool) -> tuple[bool, str]:
    """(promote?, why) from an evaluation's metrics.json."""
    difference = metrics.get("difference")
    if difference:
        k = metrics["num_attempts"]
        low = difference["low"][-1]
        verdict = low > margin
        relation = ">" if verdict else "<="
        return verdict, f"lower 95% bound of V@{k} difference {low:+.4f} {relation} margin {margin:+.4f}"
    if first and not has_current:
        return True, "first version (no current model to compare with)"
    return (
        False,
        "the evaluation has no baseline comparison; evaluate against the current model (or use --first)",
    )


def promote(config: PromoteConfig) -> dict[str, Any]:
    """Register the candidate as a new version; move the current pointer if the gate passes."""
    from calgrpo.manifest import build_manifest
    from calgrpo.storage.core import fetch_folder, is_s3, join, publish_folder, read_bytes, write_bytes

    metrics = json.loads(read_bytes(join(config.evaluation, "metrics.json")))
    promoted, reason = decide(
        metrics, config.margin, config.first, current_version(config.registry, config.name) is not None
    )
    with tempfile.TemporaryDirectory(prefix="calgrpo-promote-") as folder:
        staging = Path(folder) / "version"
        if is_s3(config.model):
            fetch_folder(config.model, staging / "model")
            (staging / "model" / "manifest.json").unlink()
        else:
            if not Path(config.model, "config.json").is_file():
                raise CalgrpoError(f"{config.model} is not a model folder (no config.json)")
            shutil.copytree(config.model, staging / "model", ignore=shutil.ignore_patterns("manifest.json"))
        fingerprint = hashlib.sha256(json.dumps(build_manifest(staging / "model"), sort_keys=True).encode())
        now = dt.datetime.now(dt.UTC)
        version = f"{now:%Y%m%dT%H%M%S%fZ}-{fingerprint.hexdigest()[:8]}"
        decision = {"version": version, "promoted": promoted, "reason": reason, "margin": config.margin,
                    "candidate": config.model, "evaluation": config.evaluation, "decided_at": now.isoformat(),
                    "previous": current_version(config.registry, config.name)}  # fmt: skip
        evidence = Path(folder) / "evidence"
        evidence.mkdir()
        (evidence / "decision.json").write_text(json.dumps(decision, indent=1, sort_keys=True))
        (evidence / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        version_uri = join(config.registry, "models", config.name, "versions", version)
        # The model is a published folder of its own (loadable by URI); the evidence goes beside it.
        publish_folder(staging / "model", join(version_uri, "model"))
        publish_folder(evidence, version_uri)
    if promoted:
        pointer = {"version": version, "model": join(version_uri, "model"), "promoted_at": now.isoformat()}
        write_bytes(
            join(config.registry, "models", config.name, "current.json"), json.dumps(pointer).encode()
        )
    return decision
