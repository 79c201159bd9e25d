"""Stand-ins for vLLM's output and parameter classes, with exactly the names vLLM declares.

``DECLARED`` is what the pinned release's source declares (fields of the dataclasses, msgspec
struct and TypedDict; the attributes ``RequestOutput.__init__`` sets); ``test_vllm_contract``
checks it against the wheel, so the fakes built here cannot drift from vLLM: an engine reading a
name vLLM lacks fails on them with AttributeError, offline.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

DECLARED: dict[str, tuple[str, ...]] = {
    "vllm.CompletionOutput": (
        "cumulative_logprob", "finish_reason", "index", "logprobs", "lora_request", "routed_experts",
        "sampling_mask", "spec_decode_metrics", "stop_reason", "text", "token_ids", "weight_versions",
    ),
    "vllm.RequestOutput": (
        "ec_transfer_params", "encoder_prompt", "encoder_prompt_token_ids", "finished", "kv_transfer_params",
        "lora_request", "metrics", "num_cache_creation_tokens", "num_cached_tokens", "outputs", "prompt",
        "prompt_logprobs", "prompt_token_id_logprobs", "prompt_token_ids", "request_id",
    ),
    "vllm.logprobs.Logprob": ("decoded_token", "logprob", "rank"),
    "vllm.SamplingParams": (
        "allowed_token_ids", "bad_words", "detokenize", "extra_args", "flat_logprobs", "frequency_penalty",
        "ignore_eos", "include_stop_str_in_output", "logit_bias", "logprob_token_ids", "logprobs",
        "max_tokens", "min_p", "min_tokens", "n", "output_kind", "output_text_buffer_length",
        "presence_penalty", "prompt_logprob_start", "prompt_logprob_token_ids", "prompt_logprobs",
        "repetition_detection", "repetition_penalty", "routed_experts_prompt_start", "seed", "skip_clone",
        "skip_reading_prefix_cache", "skip_special_tokens", "spaces_between_special_tokens", "stop",
        "stop_token_ids", "stream_interval", "structured_outputs", "temperature", "thinking_token_budget",
        "top_k", "top_p", "trace_decode_token_ids", "watermarking",
    ),
    "vllm.TokensPrompt": (
        "cache_salt", "media_io_kwargs", "mm_processor_kwargs", "multi_modal_data", "multi_modal_uuids",
        "prompt", "prompt_token_ids", "prompt_token_offsets", "token_type_ids",
    ),
}  # fmt: skip
"""Public names per class (private ``_fields`` of the struct left out)."""

FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""``vllm.v1.engine.FINISH_REASON_STRINGS``."""


def _frozen_class(owner: str) -> type:
    """A slotted dataclass with exactly ``DECLARED[owner]`` as keyword fields (default None)."""
    fields = [(name, object, dataclasses.field(default=None)) for name in DECLARED[owner]]
    return dataclasses.make_dataclass(owner.rsplit(".", 1)[1], fields, kw_only=True, slots=True, frozen=True)


CompletionOutput = _frozen_class("vllm.CompletionOutput")
RequestOutput = _frozen_class("vllm.RequestOutput")
Logprob = _frozen_class("vllm.logprobs.Logprob")
SamplingParams = _frozen_class("vllm.SamplingParams")


def completion(tokens: list[int], logprobs: list[float], finish_reason: str | None, extra: int = 0):
    """A CompletionOutput as vLLM builds it with ``logprobs=extra``: per position, the sampled token
    and the ``extra`` next most likely ones (ids above 10_000 here), ranked."""
    positions = []
    for token, value in zip(tokens, logprobs, strict=True):
        position = {token: Logprob(logprob=value, rank=1)}
        position |= {10_000 + k: Logprob(logprob=value - 1.0 - k, rank=2 + k) for k in range(extra)}
        positions.append(position)
    return CompletionOutput(index=0, text="", token_ids=list(tokens), cumulative_logprob=sum(logprobs),
                            logprobs=positions, finish_reason=finish_reason)  # fmt: skip


def request(*completions) -> object:
    return RequestOutput(request_id="0", outputs=list(completions), finished=True)


class FakeLLM:
    """``LLM.generate(prompts, sampling_params=..., use_tqdm=...)``: each prompt's reply is taken
    from ``script(prompt_token_ids, params)``, a (tokens, logprobs, finish_reason) triple."""

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[list[dict], list]] = []

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True):
        assert not use_tqdm
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        for prompt in prompts:
            assert set(prompt) <= set(DECLARED["vllm.TokensPrompt"]) and "prompt_token_ids" in prompt
        self.calls.append((prompts, sampling_params))
        return [
            request(completion(*self.script(p["prompt_token_ids"], s)))
            for p, s in zip(prompts, sampling_params, strict=True)
        ]


def fake_vllm_module() -> SimpleNamespace:
    """What the engine takes from ``import vllm`` at generation time."""
    return SimpleNamespace(SamplingParams=SamplingParams)
