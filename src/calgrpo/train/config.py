"""Trainer configuration; importable without torch. The method name is checked by the Trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from calgrpo.algorithms.cost_config import AttemptCost
from calgrpo.algorithms.loss_config import PolicyLossConfig
from calgrpo.errors import ConfigError, check_ranges
from calgrpo.train.schedule import SCHEDULES


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of the policy on each rollout batch."""

    method: str = "cal"
    """Advantage method (``cal``, ``trajectory``, ``naive``, ``single``, ``cal_inclusive``,
    ``cal_singleton_zero`` or one registered later)."""
    scale_by_std: bool = False
    """Divide each prompt's advantages by the std of its group's outcomes (GRPO's scale)."""
    cost: AttemptCost = field(default_factory=AttemptCost)
    """What each attempt costs (``--train.cost.per-attempt``, ``--train.cost.per-token``): non-zero
    costs make the objective J = V@K - E[cost], so the policy learns to spend attempts and tokens
    where they pay, and to give up where the task allows it (docs/algorithms.md)."""
    learning_rate: float = 1e-3
    """AdamW learning rate (> 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay (>= 0)."""
    warmup_steps: int = 0
    """Optimizer steps of linear learning-rate warm-up (>= 0)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """After the warm-up: ``constant``, or a ``linear`` / ``cosine`` decay to ``lr_final_ratio`` x the
    rate over ``lr_decay_steps`` optimizer steps (a run takes rounds x ppo_epochs x minibatches)."""
    lr_decay_steps: int = 0
    """Optimizer steps of the decay (>= 1 with a decaying schedule); the rate stays at its floor after."""
    lr_final_ratio: float = 0.0
    """The decay's floor as a share of ``learning_rate`` (in [0, 1])."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold on the global norm (> 0)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (>= 1); later passes are off-policy and rely on clipping."""
    minibatches: int = 1
    """Optimizer steps per pass; the batch's prompts are split evenly (>= 1)."""
    micro_batch_size: int = 64
    """Trajectories per forward/backward; gradients accumulate over them (>= 1)."""
    micro_batch_tokens: int = 0
    """If > 0, micro-batches are filled by padded tokens instead of a count: each minibatch's
    trajectories sorted by length, then packed greedily up to this many (rows x longest) tokens, so
    short trajectories are not padded to the longest of the batch."""
    pack_sequences: bool = False
    """With ``micro_batch_tokens``: lay trajectories end to end in rows of at most that many tokens
    (block-diagonal attention, positions restarting per trajectory), so no compute goes to padding."""
    logprob_chunk_tokens: int = 1024
    """Attempt tokens whose logits exist at once when scoring (0: the model's full logits)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """``bf16``: autocast the forward and backward to bfloat16; weights and AdamW state stay fp32."""
    compile_layers: bool = False
    """``torch.compile`` each decoder layer in place (the unit FSDP shards, so it composes with it); the
    first step pays the compilation."""
    gradient_checkpointing: bool = False
    """Recompute decoder activations in backward (less memory, ~30% more compute)."""
    lora_rank: int = 0
    """LoRA adapters of this rank on ``lora_targets`` (0: train every weight). Saved models are always
    full weights, adapters merged in."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: adapters are scaled by alpha / rank."""
    lora_targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    )  # fmt: skip
    """Module names that get adapters."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism under torchrun (WORLD_SIZE > 1): replicated (``ddp``) or sharded (``fsdp``)."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 - clip_low."""
    clip_high: float = 0.2
    """PPO ratio clip above 1 + clip_high."""
    kl_coef: float = 0.0
    """Weight of the k3 KL to the initial policy (0 turns it off and keeps no reference copy)."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus on attempt tokens (>= 0); biases the gradient, fights collapse."""
    temperature: float = 1.0
    """Temperature at which tokens are scored; must equal the sampling temperature."""

    def __post_init__(self) -> None:
        check_ranges(
            "train",
            self,
            {
                "learning_rate": (self.learning_rate > 0, "> 0"),
                "weight_decay": (self.weight_decay >= 0, ">= 0"),
                "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
                "lr_schedule": (self.lr_schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
                "lr_decay_steps": (self.lr_decay_steps >= (self.lr_schedule != "constant"), ">= 1 to decay"),
                "lr_final_ratio": (0.0 <= self.lr_final_ratio <= 1.0, "in [0, 1]"),
                "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
                "ppo_epochs": (self.ppo_epochs >= 1, ">= 1"),
                "minibatches": (self.minibatches >= 1, ">= 1"),
                "micro_batch_size": (self.micro_batch_size >= 1, ">= 1"),
                "micro_batch_tokens": (self.micro_batch_tokens >= 0, ">= 0"),
                "logprob_chunk_tokens": (self.logprob_chunk_tokens >= 0, ">= 0"),
                "lora_rank": (self.lora_rank >= 0, ">= 0"),
                "lora_alpha": (self.lora_alpha > 0, "> 0"),
                "entropy_coef": (self.entropy_coef >= 0, ">= 0"),
                "temperature": (self.temperature > 0, "> 0"),
            },
        )
        if self.pack_sequences and self.micro_batch_tokens <= 0:
            raise ConfigError("train: --train.pack-sequences needs --train.micro-batch-tokens > 0")
        PolicyLossConfig(self.clip_low, self.clip_high, self.kl_coef)  # validates the clip/KL fields
