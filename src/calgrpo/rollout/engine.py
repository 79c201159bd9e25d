"""The rollout engine interface: batched sampling over growing conversations.

A session holds a batch of token sequences that grow turn by turn. The multi-attempt loop appends
context tokens (prompt, feedback), asks for one attempt per live row, and drops rows as they are
solved. Engines may keep per-row state between calls (the transformers engine keeps the KV cache;
vLLM reuses prefixes through its own cache), so the history is not re-encoded for every attempt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

from calgrpo.registry import Registry
from calgrpo.rollout.config import SamplingParams


@dataclass(frozen=True)
class Generation:
    """One sampled attempt."""

    token_ids: list[int]
    logprobs: list[float]
    """Behaviour log-prob of each sampled token (at the sampling temperature, before top-p)."""
    finish_reason: Literal["stop", "length"]


class GenerationSession(ABC):
    """A batch of conversations living on an engine; rows are numbered 0..num_rows-1."""

    @property
    @abstractmethod
    def num_rows(self) -> int: ...

    @abstractmethod
    def append(self, suffixes: list[list[int]]) -> None:
        """Append context tokens to every row (one list per row, possibly empty)."""

    @abstractmethod
    def generate(self, params: SamplingParams, generator: torch.Generator) -> list[Generation]:
        """Sample one continuation per row; it becomes part of that row's conversation."""

    @abstractmethod
    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and renumber them 0..len(rows)-1."""


class RolloutEngine(ABC):
    """Something that can open generation sessions for a policy."""

    @abstractmethod
    def open_session(self, contexts: list[list[int]]) -> GenerationSession:
        """A session whose row i starts with ``contexts[i]``."""


ENGINES: Registry[type[RolloutEngine]] = Registry("rollout engine")


def open_engine(kind: str, model_uri: str, *, reuse_cache: bool = True, vllm_settings=None):
    """(tokenizer, layout, engine) to roll out ``model_uri`` with: ``transformers`` (the policy on
    the GPU in bf16 when there is one, else the CPU) or ``vllm`` (which loads the weights itself)."""
    import calgrpo.rollout.hf_engine
    import calgrpo.rollout.vllm_engine  # noqa: F401 (both register themselves; vLLM loads lazily)
    from calgrpo.models import loading
    from calgrpo.rollout.chat import ChatLayout

    engine_class = ENGINES.get(kind)  # an unknown name fails with the list of known ones
    if kind == "vllm":
        folder = loading.resolve_model_folder(model_uri)
        tokenizer = loading.load_tokenizer(folder, model_uri)
        layout = ChatLayout(tokenizer)
        return tokenizer, layout, engine_class(folder, layout.stop_token_ids, vllm_settings)
    device, dtype = loading.inference_placement()
    policy = loading.load_policy(model_uri, device=device, dtype=dtype)
    policy.model.eval()
    layout = ChatLayout(policy.tokenizer)
    engine = engine_class(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids, reuse_cache)
    return policy.tokenizer, layout, engine


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row.

    Args:
        logits: (B, V) next-token logits.

    Returns:
        (tokens (B,) long, logprobs (B,) float32): the behaviour log-prob is log softmax(logits / T)
        at the sampled token. One uniform per row is drawn from ``generator`` whatever the mode, so
        the random stream does not depend on the values of the logits.
    """
    logprobs = torch.log_softmax(logits.float() / params.temperature, dim=-1)
    uniforms = torch.rand(logits.shape[0], generator=generator, device=generator.device)
    if params.greedy:
        tokens = logprobs.argmax(dim=-1)
    else:
        probs = logprobs.exp()
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        cdf = probs.cumsum(dim=-1)
        targets = uniforms.to(cdf.device).unsqueeze(-1) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, targets).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    return tokens, logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
