"""Multi-attempt generation on a Qwen2.5-0.5B-shaped model: the transformers engine (one KV cache
kept across attempts) and vLLM when installed, against ``model.generate`` on the same batch.

    python benchmarks/gpu_rollout.py                      # on a GPU: batch 64, 128-token prompts
    python benchmarks/gpu_rollout.py --small --device cpu  # a smoke run of the script

Each of K attempts samples ``--new-tokens`` tokens for every row, then a 40-token feedback turn is
appended; random weights never emit a stop token, so every row runs to the budget. ``generate``
gets each attempt's whole history again (what a loop without cache reuse does) and, as the anchor,
one plain call of 128-token prompts. Prints one JSON object with generated tokens/s.
"""

import argparse
import json
import time

import torch
from gpu_train_step import qwen_shaped

from calgrpo.rollout.config import SamplingParams
from calgrpo.rollout.hf_engine import TransformersEngine


def timed(function, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--attempts", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.small:
        args.batch, args.new_tokens = 4, 8
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = qwen_shaped(args.small).to(device, dtype).eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab, (args.batch, args.prompt), generator=generator)
    feedback = torch.randint(0, vocab, (args.batch, 40), generator=generator).tolist()
    params = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)
    generated = args.batch * args.new_tokens * args.attempts
    result = {
        "benchmark": "gpu_rollout",
        **vars(args),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }

    engine = TransformersEngine(model, pad_token_id=0, stop_token_ids=[])

    def multi_attempt() -> None:
        session = engine.open_session(prompts.tolist())
        for attempt in range(args.attempts):
            session.generate(params, torch.Generator().manual_seed(attempt))
            session.append(feedback)

    with torch.no_grad():
        multi_attempt()  # warm-up
        result["engine_tokens_per_s"] = generated / timed(multi_attempt, device)

        def regenerate() -> None:
            history = prompts.to(device)
            for _ in range(args.attempts):
                out = model.generate(
                    history,
                    attention_mask=torch.ones_like(history),
                    do_sample=True,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    pad_token_id=0,
                )
                history = torch.cat([out, torch.tensor(feedback, device=device)], dim=1)

        result["generate_reencoding_tokens_per_s"] = generated / timed(regenerate, device)
        single = args.batch * args.new_tokens
        result["generate_single_call_tokens_per_s"] = single / timed(
            lambda: model.generate(
                prompts.to(device),
                do_sample=True,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
            ),
            device,
        )
    result["engine_over_reencoding"] = (
        result["engine_tokens_per_s"] / result["generate_reencoding_tokens_per_s"]
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
