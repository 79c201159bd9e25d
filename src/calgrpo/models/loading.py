"""Load a policy (causal LM + tokenizer) from any model source a command takes, through one resolver.

Sources: a local folder (``save_pretrained``), an ``s3://`` prefix, a ``.gguf`` file (local or
``s3://``; converted once into a folder, models/gguf.py), a Hugging Face hub id with an optional
revision (``org/name@v1.0``, a branch, tag or commit; fetched into the hub's cache, offline
when ``HF_HUB_OFFLINE=1`` and it is cached), or ``tiny:llama`` / ``tiny:qwen2`` (a tiny model built
from the default config, the same bytes wherever it is built, kept in the cache).

``s3://bucket/prefix`` folders must be published with a manifest (``calgrpo s3 publish``); they are
fetched once, every file checked against its sha256, into a cache keyed by the URI and the
manifest, so a changed model is fetched again and an unchanged one is not. Endpoint, region and
credentials come from the standard AWS environment/config (``AWS_ENDPOINT_URL`` for a local S3).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calgrpo.errors import InvalidInputError
from calgrpo.models.gguf import gguf_folder, is_gguf

log = logging.getLogger(__name__)


@dataclass
class Policy:
    """A loaded causal LM, its tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    source: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("CALGRPO_CACHE", Path.home() / ".cache" / "calgrpo"))


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?")
"""``name`` or ``org/name``, optionally ``@revision`` (what the hub accepts, nothing a path could hide in)."""
_HUB_SKIPPED = ["*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.pth", "original/*", "onnx/*"]
"""Files of a hub repository no transformers load needs (other runtimes' copies of the weights)."""


def resolve_model_folder(uri: str, cache_dir: Path | None = None) -> str:
    """The local folder that holds the model ``uri`` names (see the module's sources)."""
    models = cache_dir or default_cache_dir() / "models"
    if is_gguf(uri):
        return str(gguf_folder(_local_gguf(uri, models), models))
    if uri.startswith("s3://"):
        return str(download_s3_folder(uri, models))
    if uri.startswith("tiny:"):
        return str(build_tiny_folder(uri, models))
    path = Path(uri).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InvalidInputError(
                f"model {uri} is not a model folder (no config.json); save one with save_pretrained, "
                "or give a hub id, an s3:// prefix or tiny:llama"
            )
        return str(path)
    if uri.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(uri):
        raise InvalidInputError(f"model {uri}: no such folder, and not a hub id (org/name[@revision])")
    return str(download_hub_model(uri))


def _local_gguf(uri: str, cache_root: Path) -> Path:
    """A GGUF file on disk: the path itself, or an s3:// file downloaded (checked against its folder's
    manifest or its recorded sha256) into the cache."""
    from calgrpo.storage.core import is_s3
    from calgrpo.storage.folders import fetch_file

    if not is_s3(uri):
        return Path(uri).expanduser()
    target = cache_root / "downloads" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    return fetch_file(uri, target)


def download_hub_model(uri: str) -> Path:
    """``org/name[@revision]`` from the hub into its cache (the cached copy when offline)."""
    from huggingface_hub import snapshot_download

    repo, _, revision = uri.partition("@")
    try:
        return Path(snapshot_download(repo, revision=revision or None, ignore_patterns=_HUB_SKIPPED))
    except Exception as error:  # noqa: BLE001 (the hub client raises a different type per cause)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidInputError(
            f"model {uri}: cannot get it from the hub ({type(error).__name__}: {reason[:200]}); check the id "
            "and revision and the network, or give a local folder or s3:// prefix"
        ) from None


def build_tiny_folder(uri: str, cache_root: Path) -> Path:
    """``tiny:llama`` / ``tiny:qwen2`` saved once into the cache (built deterministically, so the
    cached copy is the model any other process would build)."""
    from calgrpo.models.tiny import save_tiny_from_uri

    target = cache_root / uri.replace(":", "-")
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_root))
    try:
        save_tiny_from_uri(uri, scratch)  # an unknown architecture fails here, naming the choices
        scratch.rename(target)  # atomic: a concurrent builder's copy is the same model
    except OSError:
        pass  # another process renamed its copy first
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def inference_placement() -> tuple[str, torch.dtype]:
    """(device, dtype) to generate with: the GPU in bfloat16 when there is one, else the CPU in fp32."""
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def load_tokenizer(folder: str, uri: str):
    """The policy's tokenizer, with a pad token, refusing one without a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models often ship without one
    if tokenizer.chat_template is None:
        raise InvalidInputError(f"tokenizer of {uri} has no chat template; attempts are laid out with one")
    return tokenizer


def load_policy(
    uri: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu", cache_dir: Path | None = None
) -> Policy:
    """Load model and tokenizer from ``uri`` (hub id, local folder or s3:// prefix)."""
    from transformers import AutoModelForCausalLM

    folder = resolve_model_folder(uri, cache_dir)
    tokenizer = load_tokenizer(folder, uri)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    return Policy(model=model, tokenizer=tokenizer, source=uri)


def download_s3_folder(uri: str, cache_root: Path) -> Path:
    """Fetch a published model folder (manifest verified) into a cache keyed by its manifest."""

    from calgrpo.manifest import MANIFEST, is_complete
    from calgrpo.storage.core import IncompleteOutputError, join, read_tagged, split_s3
    from calgrpo.storage.folders import fetch_folder

    split_s3(uri)  # a URI without a bucket fails here, with that message
    manifest, _ = read_tagged(join(uri, MANIFEST))  # bounded: the manifest comes from the bucket
    if manifest is None:
        raise IncompleteOutputError(
            f"{uri} has no {MANIFEST}; publish model folders with `calgrpo s3 publish`"
        )
    target = cache_root / hashlib.sha256(uri.encode() + manifest).hexdigest()[:16]
    if is_complete(target):
        return target
    fetch_folder(uri, target)
    log.info("fetched %s into %s", uri, target)
    return target
