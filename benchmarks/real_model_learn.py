"""CAL-GRPO training of a real pretrained model on CPU: SmolLM2-135M-Instruct on the worded guess task.

    python benchmarks/real_model_learn.py [--methods cal naive] [--rounds 12]

The task: guess a number from 0 to N-1 with a hint that is right half the time, feedback "higher" or
"lower" in sentences (`--task guess --task-options wording natural`), short answers. Each method
trains from the same initial model with the same seeds (`calgrpo learn`, every weight trained) for
`--rounds` rounds; then the final model is evaluated against the initial one on the run's fixed
evaluation problems (`calgrpo evaluate`, paired bootstrap interval). Prints one JSON object: per
method the learning curve (V@K every `--eval-every` rounds), V@K before and after with the paired
interval, rollout seconds and training tokens per second per round, wall time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from calgrpo.evaluation.stage import EvaluateConfig, evaluate
from calgrpo.learn import LearnConfig, run_learn
from calgrpo.models.loading import resolve_model_folder
from calgrpo.models.packaged import smollm2_gguf
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.train.config import TrainConfig


def learn_config(args: argparse.Namespace, model: str, method: str, output: Path) -> LearnConfig:
    return LearnConfig(
        output=output, model=model, task="guess", rounds=args.rounds, prompts_per_round=args.prompts,
        task_options={"num_values": args.values, "wording": "natural"},
        rollout=RolloutConfig(num_attempts=args.attempts, group_size=args.group_size,
                              sampling=SamplingParams(max_new_tokens=args.max_new_tokens)),
        train=TrainConfig(method=method, learning_rate=args.lr, minibatches=args.minibatches, warmup_steps=0),
        eval_problems=args.eval_problems, eval_samples=args.eval_samples, eval_every=args.eval_every,
        show_progress=False, seed=args.seed, threads=args.threads,
    )  # fmt: skip


def run_method(args: argparse.Namespace, model: str, method: str, root: Path) -> dict:
    config = learn_config(args, model, method, root / method)
    started = time.perf_counter()
    summary = run_learn(config)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (config.output / "metrics.jsonl").read_text().splitlines()]
    rounds = [row for row in rows if "train/loss" in row]
    curve = [{"round": row["round"], f"v@{args.attempts}": row[f"eval/v@{args.attempts}"]}
             for row in rows if f"eval/v@{args.attempts}" in row]  # fmt: skip
    paired = evaluate(EvaluateConfig(  # the run's own evaluation problems, the initial model as baseline
        problems=str(config.output / "problems" / "eval.parquet"), model=summary["model"],
        baseline=model, output=str(root / f"{method}-evaluation"),
        rollout=RolloutConfig(num_attempts=args.attempts, group_size=args.eval_samples,
                              sampling=SamplingParams(max_new_tokens=args.max_new_tokens)),
        independent_samples=0, seed=args.seed,
    ))  # fmt: skip
    return {
        "rounds": len(rounds), "wall_s": round(wall, 1), "curve": curve,
        f"v@{args.attempts}_before": paired["baseline"]["v@k"]["mean"][-1],
        f"v@{args.attempts}_after": paired["candidate"]["v@k"]["mean"][-1],
        "difference": {key: paired["difference"][key][-1] for key in ("mean", "low", "high")},
        "rollout_s_per_round": round(sum(row["time/rollout_s"] for row in rounds) / len(rounds), 2),
        "train_s_per_round": round(sum(row["time/train_s"] for row in rounds) / len(rounds), 2),
        "train_tokens_per_s": round(sum(row["train/tokens_per_s"] for row in rounds) / len(rounds), 1),
    }  # fmt: skip


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--methods", nargs="+", default=["cal", "naive"])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--values", type=int, default=8, help="N, the numbers 0..N-1")
    parser.add_argument("--attempts", type=int, default=3, help="K")
    parser.add_argument("--group-size", type=int, default=4, help="G")
    parser.add_argument("--prompts", type=int, default=16, help="problems per round")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--eval-problems", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = resolve_model_folder(str(smollm2_gguf()))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in args.methods:
            results[method] = run_method(args, model, method, Path(folder))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"benchmark": "real_model_learn", "model": "SmolLM2-135M-Instruct", **vars(args),
                      "methods": results, "peak_rss_gib": round(peak_gib, 2)}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
