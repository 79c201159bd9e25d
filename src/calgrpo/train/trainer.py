"""The CAL-GRPO trainer: advantages -> clipped policy-gradient steps over one rollout batch.

The trainer never knows which advantage method runs: it asks the registry for (P, G, K) weights,
spreads them over each attempt's tokens, and minimises :func:`calgrpo.algorithms.policy_loss`
normalised by (prompts in the minibatch) x G.

Under torchrun each rank takes a slice of every minibatch's trajectories; the loss keeps the global
normaliser and gradients are summed over ranks, so one optimizer step sees the same gradient for
any world size (global batch semantics).
"""

from __future__ import annotations

import contextlib
import time

import torch

from calgrpo.algorithms import ADVANTAGE_METHODS, PolicyLossConfig, attempt_advantages, policy_loss
from calgrpo.algorithms.advantages import trajectory_success
from calgrpo.errors import ConfigError
from calgrpo.train.batch import TrajectoryBatch, token_budget_micro_batches
from calgrpo.train.config import TrainConfig
from calgrpo.train.distributed import DistContext, all_reduce_sum, decoder_layers, wrap_for_training
from calgrpo.train.packing import Packed, plan_packing
from calgrpo.train.schedule import learning_rate_factor
from calgrpo.train.scoring import PolicyScorer


class Trainer:
    """Holds the optimizer and scheduler; :meth:`train_on` consumes one rollout batch."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        ref_model: torch.nn.Module | None = None,
        context: DistContext | None = None,
    ):
        self.model = model
        self.config = config
        self.context = context or DistContext(device=next(model.parameters()).device)
        if config.kl_coef > 0 and ref_model is None:
            raise ConfigError("kl_coef > 0 needs a reference model")
        method = ADVANTAGE_METHODS.get(config.method)  # fail before any work on an unknown method
        if not config.cost.free and not method.supports_costs:
            raise ConfigError(f"--train.method {config.method} takes no attempt costs; drop --train.cost.*")
        self.loss_config = PolicyLossConfig(config.clip_low, config.clip_high, config.kl_coef)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if config.compile_layers:
            for layer in decoder_layers(model):
                layer.compile()
        trained = model
        if config.lora_rank > 0:
            from calgrpo.train.lora import apply_lora

            trained = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets)
        scorer = PolicyScorer(trained, config.logprob_chunk_tokens)
        self.scorer = wrap_for_training(scorer, config.strategy, self.context)
        self.ref_scorer = None
        if ref_model is not None:
            self.ref_scorer = PolicyScorer(ref_model.to(self.context.device), config.logprob_chunk_tokens)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.scorer.parameters() if p.requires_grad],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: learning_rate_factor(
                step, config.warmup_steps, config.lr_schedule, config.lr_decay_steps, config.lr_final_ratio
            ),
        )
        self.step = 0

    def model_weights(self, gathered: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The policy's full weights under the model's own names, LoRA adapters merged in.

        ``gathered``: the scorer's state dict gathered from all ranks (FSDP); default: this process's.
        """
        state = gathered if gathered is not None else self.scorer.state_dict()
        state = {name.removeprefix("module.").removeprefix("model."): t for name, t in state.items()}
        if self.config.lora_rank > 0:
            from calgrpo.train.lora import merge_lora_weights

            state = merge_lora_weights(state, self.config.lora_alpha / self.config.lora_rank)
        if getattr(self.model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # saved once, as the embeddings (save_pretrained's way)
        return state

    def save_model(self, folder, tokenizer) -> None:
        """A save_pretrained folder of the current policy (full weights), loadable by any engine."""
        self.model.save_pretrained(folder, state_dict=self.model_weights())
        tokenizer.save_pretrained(folder)

    def state_dict(self, with_optimizer: bool = True) -> dict:
        """Scheduler and step, and the optimizer unless it is saved sharded (``with_optimizer=False``)."""
        state = {"scheduler": self.scheduler.state_dict(), "step": self.step}
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def train_on(self, batch: TrajectoryBatch, generator: torch.Generator) -> dict[str, float]:
        """PPO epochs over ``batch``; returns round metrics. ``generator`` shuffles the minibatches."""
        config = self.config
        started = time.perf_counter()
        costs = (
            None
            if config.cost.free
            else config.cost.of(batch.attempted, batch.tokens).to(batch.rewards.dtype)
        )
        advantages = attempt_advantages(
            batch.rewards, batch.attempted, config.method, costs, scale_by_std=config.scale_by_std
        )
        num_prompts, group = batch.rewards.shape[:2]
        # Trajectory n belongs to prompt n // G; each completion token carries its attempt's weight.
        token_advantages = advantages.view(num_prompts * group, -1).gather(1, batch.token_attempt)
        ref_logprobs = self._reference_logprobs(batch) if config.kl_coef > 0 else None
        totals: dict[str, float] = {}
        num_steps = 0
        self.model.train()
        rank, world = self.context.rank, self.context.world_size
        for _ in range(config.ppo_epochs):
            order = torch.randperm(num_prompts, generator=generator)
            for prompt_ids in order.tensor_split(min(config.minibatches, num_prompts)):
                rows = (prompt_ids.unsqueeze(1) * group + torch.arange(group)).flatten()
                step_metrics = self._optimizer_step(
                    batch, rows.tensor_split(world)[rank], token_advantages, ref_logprobs,
                    len(prompt_ids) * group,
                )  # fmt: skip
                for key, value in step_metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                num_steps += 1
        elapsed = time.perf_counter() - started
        metrics = {f"train/{k}": v / num_steps for k, v in totals.items()}
        success = trajectory_success(batch.rewards)
        attempted = batch.attempted
        metrics.update(
            {
                "rollout/v@k": float(success.mean()),
                "rollout/v@1": float(batch.rewards[..., 0].mean()),
                "rollout/attempts_mean": float(attempted.sum(-1).float().mean()),
                "rollout/zero_variance_groups": float((success.std(dim=1) == 0).float().mean()),
                "train/advantage_mean": float(advantages[attempted].mean()),
                "train/advantage_abs_mean": float(advantages[attempted].abs().mean()),
                "train/tokens_per_s": float(batch.loss_mask.sum()) * config.ppo_epochs / max(elapsed, 1e-9),
                "train/lr": self.scheduler.get_last_lr()[0],
                "train/step": self.step,
                "rollout/tokens_mean": float(batch.tokens.sum(-1).mean()),
            }
        )
        if costs is not None:  # the objective trained: J = V@K - E[cost], on this batch
            metrics["rollout/cost_mean"] = float(costs.sum(-1).mean())
            metrics["rollout/objective"] = float(success.mean()) - metrics["rollout/cost_mean"]
        return metrics

    def _micro_batches(self, batch: TrajectoryBatch, rows: torch.Tensor) -> list[torch.Tensor | Packed]:
        """Row groups (padded to their longest) or, with packing, packed rows."""
        budget = self.config.micro_batch_tokens
        if budget <= 0:
            return list(rows.split(self.config.micro_batch_size))
        lengths = batch.attention_mask[rows].sum(1)
        if not self.config.pack_sequences:
            return token_budget_micro_batches(rows, lengths, budget)
        width = batch.input_ids.shape[1]
        bins = plan_packing(lengths.tolist(), budget)
        return [Packed.of([int(rows[i]) for i in b], [int(lengths[i]) for i in b], width) for b in bins]

    @staticmethod
    def _layout(micro: torch.Tensor | Packed, batch: TrajectoryBatch):
        """(take, attention, positions): how to cut per-token (N, L) tensors for this micro-batch."""
        if isinstance(micro, Packed):
            return micro.take, micro.attention_mask(), micro.position_ids
        length = int(batch.attention_mask[micro].sum(1).max())  # trim padding shared by all rows
        return (lambda source: source[micro, :length]), batch.attention_mask[micro, :length], None

    def _score(self, input_ids, attention_mask, score_mask, scorer=None, position_ids=None):
        device = self.context.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")
        positions = None if position_ids is None else position_ids.to(device)
        with autocast:
            return (scorer or self.scorer)(
                input_ids.to(device), attention_mask.to(device), score_mask.to(device),
                self.config.temperature, positions,
            )  # fmt: skip

    def _gradient_sync(self, enabled: bool):
        """Skip the gradient collective on all but a step's last micro-batch (they accumulate)."""
        if hasattr(self.scorer, "set_requires_gradient_sync"):  # FSDP2
            self.scorer.set_requires_gradient_sync(enabled)
        if enabled or not hasattr(self.scorer, "no_sync"):
            return contextlib.nullcontext()
        return self.scorer.no_sync()  # DDP

    def _optimizer_step(self, batch, rows, token_advantages, ref_logprobs, normalizer) -> dict[str, float]:
        """One optimizer step on this rank's ``rows`` of a minibatch of ``normalizer`` trajectories."""
        device, world = self.context.device, self.context.world_size
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "tokens": 0.0}
        micro_batches = self._micro_batches(batch, rows)
        # Every rank must run as many forward/backward passes as the busiest one (collectives).
        passes = len(micro_batches)
        if self.context.active:
            count = torch.tensor([passes])
            torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
            passes = int(count)
        for index in range(passes):
            with self._gradient_sync(index == passes - 1):
                if index >= len(micro_batches):  # nothing left here: a zero-gradient pass
                    logprobs, _ = self._score(batch.input_ids[:1, :2], batch.attention_mask[:1, :2],
                                              batch.attention_mask[:1, :2])  # fmt: skip
                    (logprobs.sum() * 0.0).backward()
                    continue
                take, attention, positions = self._layout(micro_batches[index], batch)
                mask = take(batch.loss_mask).to(device)
                ids = take(batch.input_ids)
                logprobs, entropy = self._score(ids, attention, mask, position_ids=positions)
                out = policy_loss(
                    logprobs,
                    take(batch.behaviour_logprobs).to(device),
                    take(token_advantages).to(device),
                    mask,
                    normalizer=normalizer,
                    config=self.loss_config,
                    ref_logprobs=None if ref_logprobs is None else take(ref_logprobs).to(device),
                )
                loss = out.loss
                masked_entropy = torch.where(mask, entropy, torch.zeros_like(entropy)).sum()
                if self.config.entropy_coef > 0:
                    loss = loss - self.config.entropy_coef * masked_entropy / normalizer
                # Data-parallel wrappers average gradients over ranks; the sum is what keeps the step
                # equal to one process's with the same global batch.
                (loss * world).backward()
                tokens = float(out.num_tokens)
                sums["tokens"] += tokens
                sums["loss"] += float(loss.detach())
                sums["pg_loss"] += float(out.pg_loss)
                sums["kl"] += float(out.kl) * tokens
                sums["clip_fraction"] += float(out.clip_fraction) * tokens
                sums["entropy"] += float(masked_entropy.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.scorer.parameters(), self.config.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        sums = all_reduce_sum(sums, self.context)
        per_token = max(sums["tokens"], 1.0)
        return {
            "loss": sums["loss"],
            "pg_loss": sums["pg_loss"],
            "kl": sums["kl"] / per_token,
            "clip_fraction": sums["clip_fraction"] / per_token,
            "entropy": sums["entropy"] / per_token,
            "grad_norm": float(grad_norm),
        }

    @torch.no_grad()
    def _reference_logprobs(self, batch: TrajectoryBatch) -> torch.Tensor:
        chunks = []
        for micro in torch.arange(batch.input_ids.shape[0]).split(self.config.micro_batch_size):
            logprobs, _ = self._score(batch.input_ids[micro], batch.attention_mask[micro],
                                      batch.loss_mask[micro], scorer=self.ref_scorer)  # fmt: skip
            chunks.append(logprobs.cpu())
        return torch.cat(chunks)
