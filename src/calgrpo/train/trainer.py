"""The CAL-GRPO trainer: advantages -> clipped policy-gradient steps over one rollout batch.

The trainer never knows which advantage method runs: it asks the registry for (P, G, K) weights,
spreads them over each attempt's tokens, and minimises :func:`calgrpo.algorithms.policy_loss`
normalised by (prompts in the minibatch) x G.
"""

from __future__ import annotations

import time

import torch

from calgrpo.algorithms import ADVANTAGE_METHODS, PolicyLossConfig, attempt_advantages, policy_loss
from calgrpo.algorithms.advantages import trajectory_success
from calgrpo.errors import ConfigError
from calgrpo.train.batch import TrajectoryBatch, token_logprobs
from calgrpo.train.config import TrainConfig


class Trainer:
    """Holds the optimizer and scheduler; :meth:`train_on` consumes one rollout batch."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, ref_model: torch.nn.Module | None = None):
        self.model = model
        self.config = config
        self.ref_model = ref_model
        if config.kl_coef > 0 and ref_model is None:
            raise ConfigError("kl_coef > 0 needs a reference model")
        ADVANTAGE_METHODS.get(config.method)  # fail before any work on an unknown method
        self.loss_config = PolicyLossConfig(config.clip_low, config.clip_high, config.kl_coef)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1))
        )
        self.step = 0

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def train_on(self, batch: TrajectoryBatch, generator: torch.Generator) -> dict[str, float]:
        """PPO epochs over ``batch``; returns round metrics. ``generator`` shuffles the minibatches."""
        config = self.config
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        advantages = attempt_advantages(
            batch.rewards, batch.attempted, config.method, scale_by_std=config.scale_by_std
        )
        num_prompts, group = batch.rewards.shape[:2]
        # Trajectory n belongs to prompt n // G; each completion token carries its attempt's weight.
        token_advantages = advantages.view(num_prompts * group, -1).gather(1, batch.token_attempt)
        ref_logprobs = self._reference_logprobs(batch) if config.kl_coef > 0 else None
        totals: dict[str, float] = {}
        num_steps = 0
        self.model.train()
        for _ in range(config.ppo_epochs):
            order = torch.randperm(num_prompts, generator=generator)
            for prompt_ids in order.tensor_split(min(config.minibatches, num_prompts)):
                rows = (prompt_ids.unsqueeze(1) * group + torch.arange(group)).flatten()
                step_metrics = self._optimizer_step(
                    batch, rows, token_advantages, ref_logprobs, len(prompt_ids) * group, device
                )
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
            }
        )
        return metrics

    def _optimizer_step(
        self, batch, rows, token_advantages, ref_logprobs, normalizer, device
    ) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
        num_tokens = 0.0
        for micro in rows.split(self.config.micro_batch_size):
            length = int(batch.attention_mask[micro].sum(1).max())  # trim padding shared by the micro-batch
            ids = batch.input_ids[micro, :length].to(device)
            mask = batch.loss_mask[micro, :length].to(device)
            logprobs, entropy = token_logprobs(
                self.model, ids, batch.attention_mask[micro, :length].to(device), self.config.temperature
            )
            out = policy_loss(
                logprobs,
                batch.behaviour_logprobs[micro, :length].to(device),
                token_advantages[micro, :length].to(device),
                mask,
                normalizer=normalizer,
                config=self.loss_config,
                ref_logprobs=None if ref_logprobs is None else ref_logprobs[micro, :length].to(device),
            )
            loss = out.loss
            masked_entropy = torch.where(mask, entropy, torch.zeros_like(entropy)).sum()
            if self.config.entropy_coef > 0:
                loss = loss - self.config.entropy_coef * masked_entropy / normalizer
            loss.backward()
            tokens = float(out.num_tokens)
            num_tokens += tokens
            sums["loss"] += float(loss.detach())
            sums["pg_loss"] += float(out.pg_loss)
            sums["kl"] += float(out.kl) * tokens
            sums["clip_fraction"] += float(out.clip_fraction) * tokens
            sums["entropy"] += float(masked_entropy.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        per_token = max(num_tokens, 1.0)
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
        device = next(self.ref_model.parameters()).device
        chunks = []
        for micro in torch.arange(batch.input_ids.shape[0]).split(self.config.micro_batch_size):
            logprobs, _ = token_logprobs(
                self.ref_model,
                batch.input_ids[micro].to(device),
                batch.attention_mask[micro].to(device),
                self.config.temperature,
            )
            chunks.append(logprobs.cpu())
        return torch.cat(chunks)
