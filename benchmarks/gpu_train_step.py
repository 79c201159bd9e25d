"""The CAL-GRPO update step on a Qwen2.5-0.5B-shaped model: tokens/s, MFU and peak memory, against a
plain transformers bf16 training step on the same batch and device.

    python benchmarks/gpu_train_step.py                  # on a GPU: 16 x 1024 tokens, random weights
    python benchmarks/gpu_train_step.py --small --device cpu --steps 2   # a smoke run of the script

The batch looks like a multi-attempt rollout: a 512-token prompt, then K = 3 attempts of 128 tokens
each separated by 40-token feedback turns; only attempt tokens are trained (30% of the sequence).
The baseline is what the issue's anchor measured: full logits over every token, cross-entropy,
backward, AdamW, bf16 autocast. MFU counts 6 x parameters x tokens against the dense bf16 peak
(989 TFLOP/s for H100 and H200 SXM). Prints one JSON object.
"""

import argparse
import json
import time

import torch

from calgrpo.train.batch import TrajectoryBatch
from calgrpo.train.config import TrainConfig
from calgrpo.train.trainer import Trainer

PEAK_BF16_FLOPS = 989e12


def qwen_shaped(small: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if small:
        config = Qwen2Config(
            vocab_size=4096,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    else:  # Qwen2.5-0.5B's shape
        config = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def multi_attempt_batch(rows: int, length: int, vocab: int, prompts: int) -> TrajectoryBatch:
    """Random token ids with the mask layout of a K = 3 rollout (rewards: one success per group)."""
    generator = torch.Generator().manual_seed(0)
    prompt, attempt, feedback = length // 2, length // 8, (length - length // 2 - 3 * (length // 8)) // 2
    loss_mask = torch.zeros(rows, length, dtype=torch.bool)
    token_attempt = torch.zeros(rows, length, dtype=torch.long)
    start = prompt
    for k in range(3):
        loss_mask[:, start : start + attempt] = True
        token_attempt[:, start : start + attempt] = k
        start += attempt + feedback
    group = rows // prompts
    rewards = torch.zeros(prompts, group, 3)
    rewards[:, 0, 2] = 1.0  # one trajectory per group succeeds at its third attempt
    return TrajectoryBatch(
        input_ids=torch.randint(0, vocab, (rows, length), generator=generator),
        attention_mask=torch.ones(rows, length, dtype=torch.bool),
        loss_mask=loss_mask,
        token_attempt=token_attempt,
        behaviour_logprobs=torch.full((rows, length), -2.0) * loss_mask,
        rewards=rewards,
        attempted=torch.ones(prompts, group, 3, dtype=torch.bool),
        problem_ids=[f"p{i}" for i in range(prompts)],
    )


def plain_step(model, optimizer, batch, device, micro: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    for rows in torch.arange(batch.input_ids.shape[0]).split(micro):
        ids = batch.input_ids[rows].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
    optimizer.step()


def measure(step, steps: int, device) -> tuple[float, float | None]:
    """(seconds per step after one warm-up step, peak GiB on a GPU)."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return (time.perf_counter() - started) / steps, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a tiny model and batch (smoke test)")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=4, help="trajectories per forward/backward")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--chunk-tokens", type=int, default=2048)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.small:
        args.rows, args.length = 8, 128
    result = {
        "benchmark": "gpu_train_step",
        **vars(args),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    tokens = args.rows * args.length
    if not args.skip_baseline:
        model = qwen_shaped(args.small).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        batch = multi_attempt_batch(args.rows, args.length, model.config.vocab_size, args.rows // 4)
        seconds, peak = measure(
            lambda: plain_step(model, optimizer, batch, device, args.micro_batch), args.steps, device
        )
        params = sum(p.numel() for p in model.parameters())
        result["baseline"] = {
            "tokens_per_s": tokens / seconds,
            "peak_gib": peak,
            "mfu": 6 * params * tokens / seconds / PEAK_BF16_FLOPS,
        }
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    model = qwen_shaped(args.small).to(device)
    params = sum(p.numel() for p in model.parameters())
    config = TrainConfig(
        learning_rate=1e-6,
        micro_batch_size=args.micro_batch,
        precision="bf16",
        logprob_chunk_tokens=args.chunk_tokens,
        gradient_checkpointing=args.checkpointing,
        compile_layers=args.compile,
    )
    trainer = Trainer(model, config)
    batch = multi_attempt_batch(args.rows, args.length, model.config.vocab_size, args.rows // 4)
    seconds, peak = measure(
        lambda: trainer.train_on(batch, torch.Generator().manual_seed(0)), args.steps, device
    )
    result["cal_grpo"] = {
        "tokens_per_s": tokens / seconds,
        "peak_gib": peak,
        "mfu": 6 * params * tokens / seconds / PEAK_BF16_FLOPS,
        "parameters": params,
    }
    if "baseline" in result:
        result["speedup"] = result["cal_grpo"]["tokens_per_s"] / result["baseline"]["tokens_per_s"]
        if peak is not None:
            result["memory_ratio"] = result["cal_grpo"]["peak_gib"] / result["baseline"]["peak_gib"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
