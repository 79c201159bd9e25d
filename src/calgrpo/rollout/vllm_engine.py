"""The vLLM rollout engine (GPU image, optional extra ``gpu``): offline ``LLM`` with prefix caching.

Each attempt index submits every live trajectory as one ``generate`` call, so vLLM's continuous
batching schedules them together and its prefix cache finds the shared history (prompt, earlier
attempts, feedback) of each row: a later attempt pays only for its new tokens, like the KV reuse of
the transformers engine. Sampling is seeded per row from the rollout's generator, so a run is
reproducible on the same GPU, vLLM release and batch.

Behaviour log-probs come back in vLLM's ``processed_logprobs`` mode: log-probs at the sampling
temperature. With ``top_p < 1`` they are those of the truncated distribution the token was drawn
from, where the transformers engine reports them before truncation (keep ``top_p = 1`` for RL, as
the trainer scores tokens without truncation either way).

vLLM pins an exact torch release, so it is imported only when this engine is built.
"""

from __future__ import annotations

import torch

from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.rollout.config import VLLMSettings
from calgrpo.rollout.engine import ENGINES, Generation, GenerationSession, RolloutEngine, SamplingParams


def import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ConfigError(
            "the vllm engine needs vLLM, which is not installed here: install the GPU extra "
            "(pip install 'calgrpo[gpu]', in the GPU image) or use --engine transformers"
        ) from error
    return vllm


@ENGINES.register("vllm")
class VLLMEngine(RolloutEngine):
    """An offline ``vllm.LLM`` over a model folder; the policy's weights are read from that folder."""

    def __init__(self, model_path: str, stop_token_ids: list[int], settings: VLLMSettings | None = None):
        vllm = import_vllm()
        settings = settings or VLLMSettings()
        self.stop_token_ids = list(stop_token_ids)
        self.llm = vllm.LLM(
            model=model_path,
            enable_prefix_caching=True,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            max_model_len=settings.max_model_len,
            dtype=settings.dtype,
            seed=settings.seed,
            logprobs_mode="processed_logprobs",
        )
        self._vllm = vllm

    def open_session(self, contexts: list[list[int]]) -> GenerationSession:
        return VLLMSession(self, contexts)

    def sampling_params(self, params: SamplingParams, seed: int):
        """vLLM's SamplingParams for one row: the sampled token's log-prob, our stop tokens, no text."""
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=seed,
            logprobs=0,
            stop_token_ids=self.stop_token_ids,
            detokenize=False,
        )


class VLLMSession(GenerationSession):
    """Rows are token lists; vLLM's prefix cache, not this class, avoids re-encoding them."""

    def __init__(self, engine: VLLMEngine, contexts: list[list[int]]):
        self.engine = engine
        self.rows = [list(c) for c in contexts]

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def append(self, suffixes: list[list[int]]) -> None:
        if len(suffixes) != len(self.rows):
            raise InvalidInputError(f"append got {len(suffixes)} suffixes for {len(self.rows)} rows")
        for row, suffix in zip(self.rows, suffixes, strict=True):
            row.extend(suffix)

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]

    def generate(self, params: SamplingParams, generator: torch.Generator) -> list[Generation]:
        if not self.rows:
            return []
        # One seed per row from the rollout's generator: reproducible, and independent of batch order.
        seeds = torch.randint(0, 2**31 - 1, (len(self.rows),), generator=generator).tolist()
        prompts = [{"prompt_token_ids": list(row)} for row in self.rows]
        outputs = self.engine.llm.generate(
            prompts, [self.engine.sampling_params(params, seed) for seed in seeds], use_tqdm=False
        )
        generations = [generation_of(output.outputs[0]) for output in outputs]
        for row, generation in zip(self.rows, generations, strict=True):
            row.extend(generation.token_ids)
        return generations


def generation_of(completion) -> Generation:
    """A vLLM ``CompletionOutput`` (token ids, one-entry log-prob dicts, finish reason) as a Generation."""
    token_ids = list(completion.token_ids)
    steps = zip(token_ids, completion.logprobs, strict=True)
    logprobs = [float(step[token].logprob) for token, step in steps]
    finish = "stop" if completion.finish_reason == "stop" else "length"
    return Generation(token_ids=token_ids, logprobs=logprobs, finish_reason=finish)
