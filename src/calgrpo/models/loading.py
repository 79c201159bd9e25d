"""Load a policy (causal LM + tokenizer) from a Hugging Face id, a local folder or an s3:// prefix.

``s3://bucket/prefix`` folders must be published with a manifest (``calgrpo s3 publish``); they are
fetched once, every file checked against its sha256, into a cache keyed by the URI and the
manifest, so a changed model is fetched again and an unchanged one is not. Endpoint, region and
credentials come from the standard AWS environment/config (``AWS_ENDPOINT_URL`` for a local S3).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calgrpo.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass
class Policy:
    """A loaded causal LM, its tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    source: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("CALGRPO_CACHE", Path.home() / ".cache" / "calgrpo"))


def resolve_model_folder(uri: str, cache_dir: Path | None = None) -> str:
    """A local folder (for s3:// and local URIs) or the hub id unchanged."""
    if uri.startswith("s3://"):
        return str(download_s3_folder(uri, cache_dir or default_cache_dir() / "models"))
    path = Path(uri).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"model folder {uri} has no config.json; save it with save_pretrained")
        return str(path)
    if uri.startswith((".", "/", "~")):
        raise InvalidInputError(f"model folder {uri} does not exist")
    return uri  # a hub id such as "Qwen/Qwen2.5-0.5B-Instruct"


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
