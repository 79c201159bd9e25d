"""A model registry on the storage layer, and the promotion gate (``calgrpo promote``).

Layout under REGISTRY: ``models/<name>/versions/<version>/`` holds two published folders: ``model/``
and ``evidence/`` (the evaluation's ``metrics.json`` and the ``decision.json``).
``models/<name>/current.json`` names the promoted version; it is moved only by compare-and-swap
against the pointer the promotion read when it started, so of two racing promotions one moves it
and the other is recorded as not promoted, and the ``previous`` chain never forks.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
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


def read_evaluation(uri: str, scratch: Path) -> dict[str, Any]:
    """metrics.json of a *complete* evaluation: the folder is fetched through its manifest (every
    file's sha256 checked), so a half-written or edited evaluation is refused."""
    from calgrpo.storage.core import IncompleteOutputError
    from calgrpo.storage.folders import fetch_folder

    try:
        folder = fetch_folder(uri, scratch / "evaluation")
    except IncompleteOutputError:
        raise CalgrpoError(
            f"{uri} is not a complete evaluation (no manifest): did `calgrpo evaluate` finish?"
        ) from None
    return json.loads((folder / "metrics.json").read_text())


def check_lineage(metrics: dict[str, Any], candidate: str, current: dict[str, Any] | None) -> str | None:
    """Raise if the evaluation is of another model; a reason to refuse if its baseline is not the
    registry's current model (None: the lineage holds). Fingerprints are by content, not path."""
    from calgrpo.storage.folders import content_fingerprint

    evaluated = metrics.get("candidate_fingerprint")
    if evaluated != candidate:
        raise CalgrpoError(
            f"the evaluation is of another model (candidate fingerprint {str(evaluated)[:12]}, the model to "
            f"promote is {candidate[:12]}): evaluate this model, then promote it"
        )
    if current is None or not metrics.get("difference"):
        return None
    serving = current.get("fingerprint") or content_fingerprint(current["model"])
    baseline = metrics.get("baseline_fingerprint")
    if baseline != serving:
        return (
            f"the evaluation's baseline (fingerprint {str(baseline)[:12]}) is not the registry's current "
            f"model {current['version']} ({str(serving)[:12]}); evaluate against the current model"
        )
    return None


def promote(config: PromoteConfig) -> dict[str, Any]:
    """Register the candidate as a new version; move the current pointer if the gate passes.

    Order: the version's model is published, the pointer is moved by compare-and-swap against the
    pointer read at the start, and only then the decision is written, saying what happened to the
    pointer (moved; not moved because another promotion moved it first; the write failed).
    """
    from calgrpo.manifest import build_manifest
    from calgrpo.storage.core import is_s3, join, read_tagged
    from calgrpo.storage.folders import fetch_folder, fingerprint_files, publish_folder

    pointer_uri = join(config.registry, "models", config.name, "current.json")
    raw, pointer_tag = read_tagged(pointer_uri)
    current = json.loads(raw) if raw is not None else None
    with tempfile.TemporaryDirectory(prefix="calgrpo-promote-") as folder:
        metrics = read_evaluation(config.evaluation, Path(folder))
        staging = Path(folder) / "version"
        if is_s3(config.model):
            fetch_folder(config.model, staging / "model")
            (staging / "model" / "manifest.json").unlink()
        else:
            if not Path(config.model, "config.json").is_file():
                raise CalgrpoError(f"{config.model} is not a model folder (no config.json)")
            shutil.copytree(config.model, staging / "model", ignore=shutil.ignore_patterns("manifest.json"))
        fingerprint = fingerprint_files(build_manifest(staging / "model")["files"])
        refusal = check_lineage(metrics, fingerprint, current)
        promoted, reason = decide(metrics, config.margin, config.first, current is not None)
        if refusal is not None:
            promoted, reason = False, refusal
        now = dt.datetime.now(dt.UTC)
        # Unique even for the same model promoted in the same microsecond by two processes.
        version = f"{now:%Y%m%dT%H%M%S%fZ}-{fingerprint[:8]}-{secrets.token_hex(4)}"
        version_uri = join(config.registry, "models", config.name, "versions", version)
        # The model is a published folder of its own (loadable by URI); the evidence goes beside it.
        publish_folder(staging / "model", join(version_uri, "model"))
        failure = None
        if promoted:
            previous = current["version"] if current else None
            pointer = {"version": version, "model": join(version_uri, "model"), "fingerprint": fingerprint,
                       "promoted_at": now.isoformat(), "previous": previous}  # fmt: skip
            promoted, reason, failure = _move_pointer(pointer_uri, pointer, pointer_tag, reason)
        decision = {"version": version, "promoted": promoted, "reason": reason, "margin": config.margin,
                    "candidate": config.model, "fingerprint": fingerprint, "evaluation": config.evaluation,
                    "decided_at": now.isoformat(), "previous": current}  # fmt: skip
        evidence = Path(folder) / "evidence"
        evidence.mkdir()
        (evidence / "decision.json").write_text(json.dumps(decision, indent=1, sort_keys=True))
        (evidence / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        publish_folder(evidence, join(version_uri, "evidence"))
    if failure is not None:
        raise failure
    return decision


def _move_pointer(
    uri: str, pointer: dict[str, Any], expected_tag: str | None, reason: str
) -> tuple[bool, str, Exception | None]:
    """Compare-and-swap the current pointer: (promoted, why, an error to raise after recording)."""
    from calgrpo.storage.core import ConflictError, StorageError, compare_and_swap, read_tagged

    try:
        compare_and_swap(uri, json.dumps(pointer).encode(), expected_tag)
    except ConflictError:
        raw, _ = read_tagged(uri)
        try:
            winner = json.loads(raw).get("version", "?") if raw else "nothing"
        except (ValueError, AttributeError):  # the pointer is only named in a message here
            winner = "an unreadable pointer"
        return False, (
            f"not promoted: another promotion moved the pointer (to {winner}) while this one ran, so the "
            f"evaluation's baseline is no longer the current model ({reason})"
        ), None
    except StorageError as error:
        return False, f"not promoted: the pointer write failed ({error})", error
    return True, reason, None
