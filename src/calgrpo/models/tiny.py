"""Tiny causal LMs built from a config, with a word-level tokenizer trained in memory.

They load exactly like any Hugging Face model (``save_pretrained`` then ``from_pretrained``), so
tests and CPU experiments exercise the real loading, chat-template and generation code paths
without downloading anything. Every word seen in the task's texts, every number included, is one
token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from calgrpo.models.config import TinyModelConfig

SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
PAD, UNK, END = "<|pad|>", "<|unk|>", "<|end|>"

# Compact on purpose (every token costs compute on CPU): a role marker before each message, and the
# assistant's turn closed by <|end|>, which is also its stop token.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} "
    "{% if message['role'] == 'assistant' %}<|end|> {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
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


def save_tiny_from_uri(uri: str, folder: str | Path):
    """``tiny:llama`` / ``tiny:qwen2`` with the default config and a vocabulary covering the guess
    task's texts (seed 0), saved to ``folder``: the same model wherever in the pipeline it is built."""
    from calgrpo.errors import ConfigError
    from calgrpo.tasks import get_task

    architecture = uri.removeprefix("tiny:")
    if not uri.startswith("tiny:") or architecture not in ("llama", "qwen2"):
        raise ConfigError(f"{uri}: tiny models are tiny:llama or tiny:qwen2")
    task = get_task("guess")
    texts = task.sample_texts(task.generate(512, 0))
    return save_tiny_policy(TinyModelConfig(architecture=architecture), texts, folder)
