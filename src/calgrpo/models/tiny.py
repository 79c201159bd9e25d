"""Tiny causal LMs built from a config, with a word-level tokenizer trained in memory.

They load exactly like any Hugging Face model (``save_pretrained`` then ``from_pretrained``), so
tests and CPU experiments exercise the real loading, chat-template and generation code paths
without downloading anything. Every word seen in the task's texts, every number included, is one
token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from calgrpo.errors import ConfigError

SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
PAD, UNK, END = "<|pad|>", "<|unk|>", "<|end|>"

# Role markers and an end-of-turn token; the assistant's turn ends with <|end|>, its stop token.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a tiny decoder-only model."""

    architecture: Literal["llama", "qwen2"] = "llama"
    """Model family of the config."""
    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = 256
    """Width of the MLP."""
    max_positions: int = 512
    """Longest sequence (prompt, all attempts and feedback)."""
    seed: int = 0
    """Initialisation seed (the global RNG is left untouched)."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tiny model: {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"tiny model: hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )


def train_tokenizer(texts: list[str]):
    """A word-level fast tokenizer over every whitespace/punctuation-split word of ``texts``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, pad_token=PAD, eos_token=END, bos_token=None
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (PAD, UNK, END)]}
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(config: TinyModelConfig, tokenizer) -> torch.nn.Module:
    """A randomly initialised causal LM sized by ``config`` for ``tokenizer``'s vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[config.architecture]
    hf_config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AutoModelForCausalLM.from_config(hf_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_policy(config: TinyModelConfig, texts: list[str], folder: str | Path):
    """Build a tiny model + tokenizer for ``texts`` and save both to ``folder``; returns the folder."""
    tokenizer = train_tokenizer(texts)
    model = build_tiny_model(config, tokenizer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
