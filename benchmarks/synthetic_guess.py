"""Hinted guessing (N = 32, K = 5) learned by a tiny transformer with each advantage method.

    python benchmarks/synthetic_guess.py                 # 4 methods x 3 seeds, published numbers
    python benchmarks/synthetic_guess.py --quick         # fewer rounds, 1 seed, for routine checks

Runs ``calgrpo learn`` (the real code path: tokenizer, causal LM, rollout engine, verifier, trainer)
in worker processes, one CPU thread each, and prints one JSON object: per method and seed the V@5
curve on a fixed evaluation set, the final V@1..V@5, success at attempt 1 and after a failed first
attempt, wall time and the share of time spent generating; per method the mean and sd over seeds.
It also times the multi-attempt rollout with and without KV-cache reuse across attempts, and saves
a PNG of the curves next to the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

METHODS = ("cal", "trajectory", "naive", "single")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no per-file bars from model loading


def learn_config(args: argparse.Namespace, method: str, seed: int):
    from calgrpo.learn import LearnConfig
    from calgrpo.models.tiny import TinyModelConfig
    from calgrpo.rollout.engine import SamplingParams
    from calgrpo.rollout.loop import RolloutConfig
    from calgrpo.train.trainer import TrainConfig

    return LearnConfig(
        output=args.output / f"{method}_seed{seed}",
        model="tiny:llama",
        tiny=TinyModelConfig(
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=2 * args.hidden,
            seed=seed,
        ),
        task_options={"num_values": args.num_values},
        rounds=args.rounds,
        prompts_per_round=args.prompts,
        rollout=RolloutConfig(
            num_attempts=args.attempts,
            group_size=args.group_size,
            sampling=SamplingParams(max_new_tokens=args.max_new_tokens),
        ),
        train=TrainConfig(
            method=method,
            learning_rate=args.lr,
            ppo_epochs=args.ppo_epochs,
            minibatches=args.minibatches,
            micro_batch_size=512,
            warmup_steps=args.warmup,
            entropy_coef=args.entropy_coef,
            scale_by_std=args.scale_by_std,
            clip_high=args.clip_high,
        ),
        eval_every=max(1, args.rounds // args.eval_points),
        eval_problems=args.eval_problems,
        eval_samples=args.eval_samples,
        seed=seed,
        show_progress=False,
    )


def run_one(args: argparse.Namespace, method: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from calgrpo.learn import run_learn

    config = learn_config(args, method, seed)
    started = time.perf_counter()
    summary = run_learn(config)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (config.output / "metrics.jsonl").read_text().splitlines()]
    curve = [
        (row["round"], row[f"eval/v@{args.attempts}"]) for row in rows if f"eval/v@{args.attempts}" in row
    ]
    rollout_s = sum(row.get("time/rollout_s", 0.0) for row in rows)
    train_s = sum(row.get("time/train_s", 0.0) for row in rows)
    after = summary["after"]
    return {
        "method": method,
        "seed": seed,
        "curve": curve,
        "final": {k.removeprefix("eval/"): v for k, v in after.items()},
        "wall_s": round(wall, 1),
        "rounds_per_s": round(args.rounds / wall, 3),
        "optimizer_steps_per_s": round(summary["optimizer_steps"] / wall, 3),
        "generation_share": round(rollout_s / max(rollout_s + train_s, 1e-9), 3),
        "model": summary["model"],
    }


def kv_reuse_timing(args: argparse.Namespace, model_folder: str) -> dict:
    """Rollout wall time of the same episodes with and without KV reuse across attempts."""
    import torch

    from calgrpo.models.loading import load_policy
    from calgrpo.rollout.chat import ChatLayout
    from calgrpo.rollout.engine import SamplingParams
    from calgrpo.rollout.hf_engine import TransformersEngine
    from calgrpo.rollout.loop import RolloutConfig, rollout
    from calgrpo.tasks import get_task

    torch.set_num_threads(1)
    policy = load_policy(model_folder)
    policy.model.eval()
    layout = ChatLayout(policy.tokenizer)
    task = get_task("guess", num_values=args.num_values)
    problems = task.generate(64, seed=12345, id_prefix="timing")
    config = RolloutConfig(
        num_attempts=args.attempts, group_size=8, sampling=SamplingParams(max_new_tokens=args.max_new_tokens)
    )
    result = {}
    for reuse in (True, False, True, False):  # interleaved, best of two
        engine = TransformersEngine(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids, reuse)
        started = time.perf_counter()
        records = rollout(problems, engine, layout, config, torch.Generator().manual_seed(0))
        elapsed = time.perf_counter() - started
        key = "reuse_s" if reuse else "recompute_s"
        result[key] = round(min(result.get(key, float("inf")), elapsed), 4)
        result["attempts"] = len(records)
    result["speedup"] = round(result["recompute_s"] / result["reuse_s"], 2)
    return result


def plot(results: list[dict], path: Path, num_values: int, attempts: int) -> None:
    from calgrpo.tasks import get_task

    optimum = get_task("guess", num_values=num_values).optimal_v_at_k(attempts)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"cal": "tab:blue", "trajectory": "tab:green", "naive": "tab:red", "single": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in results):
        runs = [r for r in results if r["method"] == method]
        for i, run in enumerate(runs):
            rounds, values = zip(*run["curve"], strict=True)
            ax.plot(
                rounds,
                values,
                color=colors.get(method),
                alpha=0.8 if len(runs) == 1 else 0.45,
                label=method if i == 0 else None,
            )
    ax.axhline(optimum, color="black", linestyle=":", linewidth=1, label=f"optimum {optimum:.3f}")
    if (num_values, attempts) == (32, 5):
        ax.axhline(0.863, color="black", linestyle="--", linewidth=0.8, label="hint then greedy 0.863")
    ax.set_xlabel("round (rollout + train)")
    ax.set_ylabel(f"V@{attempts} on the evaluation set")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"hinted guessing, N = {num_values}, K = {attempts}, tiny Llama")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of one ``learn`` run (:func:`learn_config`), shared with method_comparison.py."""
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=32, help="problems per round")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--num-values", type=int, default=32)
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=1, help="attempt length (1: the number token)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--minibatches", type=int, default=1)
    parser.add_argument("--clip-high", type=float, default=0.2)
    parser.add_argument("--entropy-coef", type=float, default=0.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--eval-points", type=int, default=10)
    parser.add_argument("--eval-problems", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--scale-by-std", action="store_true", help="divide advantages by the group's std")
    parser.add_argument("--output", type=Path, default=Path("runs/synthetic_guess"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed and a quarter of the rounds")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_run_arguments(parser)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of this report.json")
    parser.add_argument(
        "--kv-only",
        action="store_true",
        help="only time KV reuse vs re-encoding, on an untrained model of the given shape",
    )
    args = parser.parse_args()
    if args.kv_only:
        from calgrpo.models.config import TinyModelConfig
        from calgrpo.models.tiny import save_tiny_policy
        from calgrpo.tasks import get_task

        task = get_task("guess", num_values=args.num_values)
        shape = TinyModelConfig(
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=2 * args.hidden,
        )
        folder = save_tiny_policy(shape, task.sample_texts(task.generate(256, 0)), args.output / "kv_model")
        timing = kv_reuse_timing(args, str(folder))
        print(
            json.dumps(
                {
                    "benchmark": "kv_reuse",
                    "shape": dataclasses.asdict(shape),
                    "attempts": args.attempts,
                    "max_new_tokens": args.max_new_tokens,
                    **timing,
                },
                indent=2,
            )
        )
        return
    if args.replot:
        report = json.loads(args.replot.read_text())
        config = report["config"]
        plot(report["runs"], args.replot.with_name("curves.png"), config["num_values"], config["attempts"])
        return
    if args.quick:
        args.seeds = args.seeds[:1]
        args.rounds = max(args.rounds // 4, 1)

    started = time.perf_counter()
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, args, m, s) for m, s in jobs]
        results = []
        for future in futures:
            results.append(future.result())
            r = results[-1]
            print(
                f"{r['method']:<11} seed {r['seed']}: "
                f"V@{args.attempts} {r['final'][f'v@{args.attempts}']:.3f} ({r['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    summary = {}
    for method in args.methods:
        finals = [r["final"] for r in results if r["method"] == method]
        summary[method] = {
            key: {
                "mean": statistics.mean(f[key] for f in finals),
                "sd": statistics.stdev(f[key] for f in finals) if len(finals) > 1 else 0.0,
            }
            for key in (f"v@{args.attempts}", "v@1", "success_after_failed_first", "attempts_mean")
        }
    from calgrpo.tasks import get_task

    reference = next((r for r in results if r["method"] == "cal"), results[0])
    timing = kv_reuse_timing(args, reference["model"])
    optimum = get_task("guess", num_values=args.num_values).optimal_v_at_k(args.attempts)
    report = {
        "benchmark": "synthetic_guess",
        "optimum": optimum,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "summary": summary,
        "runs": results,
        "kv_reuse": timing,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "report.json").write_text(json.dumps(report, indent=2))
    try:
        plot(results, args.output / "curves.png", args.num_values, args.attempts)
        report["plot"] = str(args.output / "curves.png")
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
