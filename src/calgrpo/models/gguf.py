"""GGUF files as a model source: converted once into a plain transformers folder.

transformers reads a GGUF file (with the ``gguf`` package) and dequantizes it into an ordinary
model, but that model refuses ``save_pretrained`` (it is marked as quantized with gguf). So a plain
model is built from the same config, given the loaded weights and saved with the tokenizer the
file carries (its chat template included). The folder is cached under the file's sha256 with a
manifest written last, so every stage reads it like any other model folder, and a changed file is
converted again while an unchanged one is not.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from calgrpo.errors import InvalidInputError

log = logging.getLogger(__name__)

MAX_GGUF_BYTES = 32 << 30
"""Largest GGUF file accepted (32 GiB): a bound on what a path can make this process read."""


def is_gguf(uri: str) -> bool:
    return uri.lower().endswith(".gguf")


def gguf_folder(path: str | Path, cache_root: Path) -> Path:
    """The converted folder of the GGUF file ``path`` (converted now unless cached)."""
    from calgrpo.manifest import is_complete, sha256_file, write_manifest

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"model {path}: no such GGUF file")
    size = path.stat().st_size
    if size > MAX_GGUF_BYTES:
        raise InvalidInputError(f"model {path}: {size} bytes, over the {MAX_GGUF_BYTES} accepted")
    target = cache_root / f"gguf-{sha256_file(path)[:16]}"
    if is_complete(target):
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gguf-", dir=cache_root))
    try:
        log.info("converting %s into a model folder (once; cached in %s)", path, target)
        convert_gguf(path, scratch)
        write_manifest(scratch)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier conversion
        scratch.rename(target)
    except OSError:
        if not is_complete(target):  # not a concurrent converter that finished first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert_gguf(path: Path, folder: Path) -> None:
    """Dequantize the GGUF file at ``path`` into a save_pretrained folder (fp32 weights, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except ImportError as error:
        raise InvalidInputError(f"model {path}: reading GGUF needs the gguf package ({error})") from None
    except (ValueError, KeyError, OSError) as error:  # not a GGUF file, or an architecture transformers lacks
        raise InvalidInputError(f"model {path}: not a GGUF model transformers can read ({error})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: the saved model is a plain one
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
