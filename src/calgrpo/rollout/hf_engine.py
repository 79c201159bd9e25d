"""The transformers rollout engine (CPU, and GPU without vLLM), with KV-cache reuse across attempts.

Rows of a session grow by blocks: each forward appends a block of the same width to every row,
right-aligned, with padding (attention mask 0) on the left of shorter rows. Padding therefore sits
*inside* sequences, not only at the start; position ids count real tokens only, so every row sees
exactly the positions and keys it would see alone. Rows are dropped by selecting cache rows.

``reuse_cache=False`` re-encodes each row's full history for every attempt (the plain way, kept to
measure the saving and to test that both give the same tokens).
"""

from __future__ import annotations

import torch

from calgrpo.errors import InvalidInputError
from calgrpo.rollout.engine import (
    ENGINES,
    Generation,
    GenerationSession,
    RolloutEngine,
    SamplingParams,
    sample_tokens,
)


@ENGINES.register("transformers")
class TransformersEngine(RolloutEngine):
    """Wraps a loaded causal LM; the model is used in eval mode without gradients."""

    def __init__(self, model, pad_token_id: int, stop_token_ids: list[int], reuse_cache: bool = True):
        self.model = model
        self.pad_token_id = pad_token_id
        self.stop_token_ids = list(stop_token_ids)
        self.reuse_cache = reuse_cache

    def open_session(self, contexts: list[list[int]]) -> GenerationSession:
        if self.reuse_cache:
            return CachedSession(self, contexts)
        return RecomputeSession(self, contexts)


class CachedSession(GenerationSession):
    """Keeps one KV cache for all rows; only new tokens are run through the model."""

    def __init__(self, engine: TransformersEngine, contexts: list[list[int]]):
        self.engine = engine
        self.device = next(engine.model.parameters()).device
        self.pending = [list(c) for c in contexts]  # tokens in the conversation but not in the cache
        self.cache = None
        self.attention_mask = torch.zeros(len(contexts), 0, dtype=torch.long, device=self.device)
        self.next_position = torch.zeros(len(contexts), dtype=torch.long, device=self.device)
        self.tokens_encoded = 0  # real tokens run through the model (for benchmarks)

    @property
    def num_rows(self) -> int:
        return len(self.pending)

    def append(self, suffixes: list[list[int]]) -> None:
        _extend_rows(self.pending, suffixes)

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.pending = [self.pending[r] for r in rows]
        self.attention_mask = self.attention_mask[index]
        self.next_position = self.next_position[index]
        if self.cache is not None:
            self.cache.batch_select_indices(index)

    @torch.no_grad()
    def _feed(self) -> torch.Tensor:
        """Run every row's pending tokens through the model; (B, V) logits after each row's last one."""
        lengths = [len(p) for p in self.pending]
        width = max(lengths)
        ids = torch.full((self.num_rows, width), self.engine.pad_token_id, dtype=torch.long)
        block_mask = torch.zeros(self.num_rows, width, dtype=torch.long)
        positions = torch.zeros(self.num_rows, width, dtype=torch.long)
        start = self.next_position.cpu()
        for r, tokens in enumerate(self.pending):
            n = len(tokens)
            if n:
                ids[r, width - n :] = torch.tensor(tokens, dtype=torch.long)
                block_mask[r, width - n :] = 1
                positions[r, width - n :] = start[r] + torch.arange(n)
        self.attention_mask = torch.cat([self.attention_mask, block_mask.to(self.device)], dim=1)
        self.next_position += torch.tensor(lengths, device=self.device)
        out = self.engine.model(
            input_ids=ids.to(self.device),
            attention_mask=self.attention_mask,
            position_ids=positions.to(self.device),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position is sampled from
        )
        self.cache = out.cache
        self.tokens_encoded += sum(lengths)
        self.pending = [[] for _ in self.pending]
        return out.logits[:, -1, :]

    def generate(self, params: SamplingParams, generator: torch.Generator) -> list[Generation]:
        if self.num_rows == 0:
            return []
        if any(not p for p in self.pending):
            raise InvalidInputError("every row needs new context (a generation prompt) before generate()")
        stop = set(self.engine.stop_token_ids)
        tokens: list[list[int]] = [[] for _ in range(self.num_rows)]
        logprobs: list[list[float]] = [[] for _ in range(self.num_rows)]
        finish = ["length"] * self.num_rows
        active = list(range(self.num_rows))
        logits = self._feed()
        for step in range(params.max_new_tokens):
            sampled, sampled_logprobs = sample_tokens(logits, params, generator)
            sampled, sampled_logprobs = sampled.tolist(), sampled_logprobs.tolist()
            still_active = []
            for r in active:
                tokens[r].append(sampled[r])
                logprobs[r].append(sampled_logprobs[r])
                self.pending[r].append(sampled[r])
                if sampled[r] in stop:
                    finish[r] = "stop"
                else:
                    still_active.append(r)
            active = still_active
            if not active or step == params.max_new_tokens - 1:
                break
            # Finished rows feed their last token too; their logits are simply not sampled from.
            logits = self._feed()
        return [Generation(t, lp, f) for t, lp, f in zip(tokens, logprobs, finish, strict=True)]


class RecomputeSession(GenerationSession):
    """Re-encodes each row's whole conversation for every attempt (no reuse across attempts)."""

    def __init__(self, engine: TransformersEngine, contexts: list[list[int]]):
        self.engine = engine
        self.rows = [list(c) for c in contexts]
        self.tokens_encoded = 0

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def append(self, suffixes: list[list[int]]) -> None:
        _extend_rows(self.rows, suffixes)

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]

    def generate(self, params: SamplingParams, generator: torch.Generator) -> list[Generation]:
        fresh = CachedSession(self.engine, self.rows)
        generations = fresh.generate(params, generator)
        self.tokens_encoded += fresh.tokens_encoded
        for row, generation in zip(self.rows, generations, strict=True):
            row.extend(generation.token_ids)
        return generations


def _extend_rows(rows: list[list[int]], suffixes: list[list[int]]) -> None:
    if len(suffixes) != len(rows):
        raise InvalidInputError(f"append got {len(suffixes)} suffixes for {len(rows)} rows")
    for row, suffix in zip(rows, suffixes, strict=True):
        row.extend(suffix)
