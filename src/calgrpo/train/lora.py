"""LoRA (peft) for the trainer, with merged full weights on the way out.

Rollout engines (vLLM included) and the model registry take plain model folders, so a LoRA run still
saves full weights: W + (alpha / r) B A for every adapted layer, computed from the state dict, so the
same function serves one process and the gathered state of an FSDP run.
"""

from __future__ import annotations

import torch

from calgrpo.errors import ConfigError

PEFT_PREFIX = "base_model.model."


def apply_lora(model: torch.nn.Module, rank: int, alpha: float, targets: tuple[str, ...]) -> torch.nn.Module:
    """``model`` with LoRA adapters on ``targets`` (injected in place; returns the PeftModel wrapper)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ConfigError("--train.lora-rank needs peft: pip install 'calgrpo[lora]'") from error
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    return get_peft_model(model, config)


def merge_lora_weights(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A PeftModel state dict -> the plain model's, adapters folded in.

    Args:
        state: keys ``base_model.model.<name>`` with ``<layer>.base_layer.weight`` (out, in),
            ``<layer>.lora_A.<adapter>.weight`` (r, in) and ``<layer>.lora_B.<adapter>.weight`` (out, r).
        scaling: alpha / r.
    """
    plain: dict[str, torch.Tensor] = {}
    lora_a: dict[str, torch.Tensor] = {}
    lora_b: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key.removeprefix(PEFT_PREFIX)
        if ".lora_A." in name:
            lora_a[name.split(".lora_A.")[0]] = tensor
        elif ".lora_B." in name:
            lora_b[name.split(".lora_B.")[0]] = tensor
        else:
            plain[name.replace(".base_layer.", ".")] = tensor
    if lora_a.keys() != lora_b.keys():
        raise ValueError(f"unpaired LoRA matrices: {sorted(lora_a.keys() ^ lora_b.keys())}")
    for layer, a in lora_a.items():
        weight = plain[f"{layer}.weight"]
        delta = (lora_b[layer].float() @ a.float()) * scaling
        plain[f"{layer}.weight"] = (weight.float() + delta).to(weight.dtype)
    return plain
