"""The vLLM rollout engine (GPU image, optional extra ``gpu``): offline ``LLM`` with prefix caching.

Each attempt index submits every live trajectory as one ``generate`` call, so vLLM's continuous
batching schedules them together and its prefix cache finds the shared history (prompt, earlier
attempts, feedback) of each row: a later attempt pays only for its new tokens, like the KV reuse of
the transformers engine. Sampling is seeded per row from the rollout's generator, so a run is
reproducible on the same GPU, vLLM release and batch.

Behaviour log-probs come back in vLLM's ``processed_logprobs`` mode: log-probs at the sampling
temperature. With ``top_p < 1`` they are those of the truncated distribution the token was drawn
from, where the transformers engine reports them before truncation (keep ``top_p = 1`` for RL, as
the trainer scores tokens without truncation either way). Greedy rows are sent with temperature 0,
for which vLLM skips temperature scaling: their log-probs are at temperature 1, where the
transformers engine reports them at ``params.temperature`` (greedy decoding is for evaluation,
which does not use them).

Attempts stop only on our stop tokens or the length budget (``ignore_eos``), as in the transformers
engine: vLLM would otherwise also stop on the tokenizer's and ``generation_config``'s EOS ids.

Everything between the rollout loop and vLLM is a pure function here (arguments in, prompts and
sampling arguments out, outputs back to :class:`Generation`), tested on CPU; the names they use are
checked against the pinned vLLM release's source by ``calgrpo.rollout.vllm_contract``, which reads
this module's syntax: keep vLLM's types in annotations (``completion: CompletionOutput``) and the
arguments of ``vllm.LLM`` / ``vllm.SamplingParams`` in the dicts the functions below return.

vLLM pins an exact torch release, so it is imported only when this engine is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from calgrpo.errors import CalgrpoError, ConfigError, InvalidInputError
from calgrpo.rollout.config import VLLMSettings
from calgrpo.rollout.engine import ENGINES, Generation, GenerationSession, RolloutEngine, SamplingParams

if TYPE_CHECKING:  # annotations only (and read by the contract check): vLLM is never imported here
    from vllm import LLM, CompletionOutput, RequestOutput, TokensPrompt
    from vllm.logprobs import Logprob

LOGPROBS_MODE = "processed_logprobs"
"""vLLM's ``logprobs_mode`` for behaviour log-probs: after temperature (and top-p), as sampled."""

VLLM_FINISH_REASONS: dict[str, str | None] = {
    "stop": "stop",  # one of our stop tokens (the last token id)
    "length": "length",  # max_tokens, or the model's max_model_len
    "abort": None,
    "error": None,
    "repetition": None,  # repetition detection, which we never enable
}
"""Every finish reason vLLM reports, mapped to ours; ``None`` fails the rollout (no record of a
request vLLM gave up on). The contract check fails when vLLM's set of reasons changes."""


def import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ConfigError(
            "the vllm engine needs vLLM, which is not installed here: install the GPU extra "
            "(pip install 'calgrpo[gpu]', in the GPU image) or use --engine transformers"
        ) from error
    return vllm


def llm_arguments(model_path: str, settings: VLLMSettings) -> dict[str, object]:
    """Keyword arguments of ``vllm.LLM``: the model folder, prefix caching, our settings."""
    return dict(
        model=model_path,
        enable_prefix_caching=True,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        seed=settings.seed,
        logprobs_mode="processed_logprobs",
    )


def sampling_arguments(params: SamplingParams, seed: int, stop_token_ids: list[int]) -> dict[str, object]:
    """Keyword arguments of ``vllm.SamplingParams`` for one row: one sample, the sampled token's
    log-prob only (``logprobs=0``), our stop tokens and none other, token ids without text."""
    if params.max_new_tokens is None:
        raise InvalidInputError("max_new_tokens is None: the rollout loop resolves it from the tasks first")
    return dict(
        n=1,
        temperature=0.0 if params.greedy else params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        seed=seed,
        logprobs=0,
        stop_token_ids=list(stop_token_ids),
        ignore_eos=True,
        detokenize=False,
    )


def row_seeds(num_rows: int, generator: torch.Generator) -> list[int]:
    """One seed per row from the rollout's generator: reproducible, independent of batch order."""
    return torch.randint(0, 2**31 - 1, (num_rows,), generator=generator).tolist()


def token_prompts(rows: list[list[int]]) -> list[TokensPrompt]:
    """Each row's whole conversation as a token prompt (vLLM's prefix cache finds the shared part)."""
    return [{"prompt_token_ids": list(row)} for row in rows]


def run_generate(llm: LLM, prompts: list[TokensPrompt], sampling: list) -> list[RequestOutput]:
    """One ``generate`` call for the whole batch, one SamplingParams per prompt, no progress bar."""
    return llm.generate(prompts, sampling_params=sampling, use_tqdm=False)


def completion_of(output: RequestOutput) -> CompletionOutput:
    """The one completion of a request (we ask for ``n=1``)."""
    completions = list(output.outputs)
    if len(completions) != 1:
        raise InvalidInputError(f"a vLLM request returned {len(completions)} completions; n=1 asks for one")
    return completions[0]


def sampled_logprob(position: dict, token: int) -> float:
    """The log-prob of the sampled token in one position's ``{token id: Logprob}`` dict."""
    if token not in position:
        raise InvalidInputError(f"vLLM gave no log-prob for sampled token {token}: got {sorted(position)}")
    chosen: Logprob = position[token]
    return float(chosen.logprob)


def generation_of(completion: CompletionOutput) -> Generation:
    """A vLLM ``CompletionOutput`` (token ids, one-entry log-prob dicts, finish reason) as a Generation."""
    token_ids = [int(token) for token in completion.token_ids]
    positions = completion.logprobs
    if positions is None or len(positions) != len(token_ids):
        count = "none" if positions is None else len(positions)
        raise InvalidInputError(f"vLLM returned {count} log-prob positions for {len(token_ids)} tokens")
    reason = completion.finish_reason
    if reason not in VLLM_FINISH_REASONS:
        known = sorted(VLLM_FINISH_REASONS)
        raise InvalidInputError(f"unknown vLLM finish reason {reason!r}; known: {known}")
    finish = VLLM_FINISH_REASONS[reason]
    if finish is None:
        raise CalgrpoError(f"vLLM ended a request with {reason!r} after {len(token_ids)} tokens; see its log")
    logprobs = [sampled_logprob(step, token) for token, step in zip(token_ids, positions, strict=True)]
    return Generation(token_ids=token_ids, logprobs=logprobs, finish_reason=finish)


@ENGINES.register("vllm")
class VLLMEngine(RolloutEngine):
    """An offline ``vllm.LLM`` over a model folder; the policy's weights are read from that folder."""

    def __init__(self, model_path: str, stop_token_ids: list[int], settings: VLLMSettings | None = None):
        vllm = import_vllm()
        self.stop_token_ids = list(stop_token_ids)
        self.llm = vllm.LLM(**llm_arguments(model_path, settings or VLLMSettings()))

    def open_session(self, contexts: list[list[int]]) -> GenerationSession:
        return VLLMSession(self, contexts)


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
        vllm = import_vllm()
        stop = self.engine.stop_token_ids
        seeds = row_seeds(len(self.rows), generator)
        sampling = [vllm.SamplingParams(**sampling_arguments(params, seed, stop)) for seed in seeds]
        outputs = run_generate(self.engine.llm, token_prompts(self.rows), sampling)
        if len(outputs) != len(self.rows):
            raise InvalidInputError(f"vLLM returned {len(outputs)} outputs for {len(self.rows)} prompts")
        generations = [generation_of(completion_of(output)) for output in outputs]
        for row, generation in zip(self.rows, generations, strict=True):
            row.extend(generation.token_ids)
        return generations
