"""Log-probs and entropies of completion tokens without the full (tokens x vocab) logits.

A multi-attempt trajectory is mostly context (prompt, earlier attempts, feedback); only attempt
tokens are trained. :class:`PolicyScorer` runs the decoder once, keeps the hidden states that predict
attempt tokens, and applies the output head to them in chunks, each under activation checkpointing:
at most ``chunk_tokens x vocab`` logits exist at a time, forward or backward. With a 150k vocab and
16k trained tokens in a micro-batch that is 0.6 GB per 1k-token chunk instead of ~10 GB.

The scorer is the module DDP/FSDP wrap, so their hooks see one forward per micro-batch.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _pick_and_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, temperature: float):
    """hidden (T, H), targets (T,) -> (log-prob of each target (T,), entropy (T,)), fp32."""
    log_probs = torch.log_softmax(head(hidden).float() / temperature, dim=-1)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return picked, entropy


class PolicyScorer(torch.nn.Module):
    """Wraps a Hugging Face causal LM; ``forward`` returns (logprobs, entropy), both (B, L).

    ``chunk_tokens`` 0 takes the model's own forward and full logits (for heads that scale or cap
    their logits, which the chunked path does not reproduce).
    """

    def __init__(self, model: torch.nn.Module, chunk_tokens: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        score_mask: torch.Tensor | None = None,
        temperature: float = 1.0,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob of each token given the ones before it, and the entropy of that prediction.

        Args:
            input_ids: (B, L).
            attention_mask: (B, L) right-padded, or (B, 1, L, L) bool for packed rows
                (:class:`calgrpo.train.packing.Packed`), with their ``position_ids`` (B, L).
            score_mask: (B, L) bool, the tokens to score (default: every real token but the first).

        Returns:
            (logprobs (B, L), entropy (B, L)) fp32, 0 where not scored (always at position 0).
        """
        if score_mask is None:
            score_mask = attention_mask.bool().clone()
        if attention_mask.dim() == 2:
            attention_mask = attention_mask.long()
        score_mask = score_mask.clone()
        score_mask[:, 0] = False  # nothing predicts the first token
        if self.chunk_tokens <= 0:
            return self._full(input_ids, attention_mask, score_mask, temperature, position_ids)
        backbone, head = self.model.get_decoder(), self.model.get_output_embeddings()
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False)  # fmt: skip
        hidden = hidden.last_hidden_state
        predictors = hidden[:, :-1][score_mask[:, 1:]]  # (T, H): position t - 1 predicts token t
        targets = input_ids[score_mask]
        picked, entropy = [], []
        for start in range(0, targets.numel(), self.chunk_tokens):
            stop = start + self.chunk_tokens
            args = (predictors[start:stop], head, targets[start:stop], temperature)
            if torch.is_grad_enabled():  # recomputed in backward: the chunk's logits are not kept
                chunk = checkpoint(_pick_and_entropy, *args, use_reentrant=False)
            else:
                chunk = _pick_and_entropy(*args)
            picked.append(chunk[0])
            entropy.append(chunk[1])
        logprobs = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        entropies = torch.zeros_like(logprobs)
        if targets.numel():
            logprobs = logprobs.masked_scatter(score_mask, torch.cat(picked))
            entropies = entropies.masked_scatter(score_mask, torch.cat(entropy))
        return logprobs, entropies

    def _full(self, input_ids, attention_mask, score_mask, temperature, position_ids):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).logits  # fmt: skip
        log_probs = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # t predicts t + 1
        picked = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        zeros = torch.zeros(input_ids.shape[0], 1, dtype=picked.dtype, device=picked.device)
        keep = score_mask.float()
        return torch.cat([zeros, picked], dim=1) * keep, torch.cat([zeros, entropy], dim=1) * keep


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    score_mask: torch.Tensor | None = None,
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`PolicyScorer.forward` for a bare model: (logprobs (B, L), entropy (B, L))."""
    return PolicyScorer(model, chunk_tokens)(input_ids, attention_mask, score_mask, temperature)
