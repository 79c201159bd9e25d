"""Training: batches from attempt records, the CAL-GRPO trainer, checkpoints."""
