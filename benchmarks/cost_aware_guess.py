"""Cost-aware training against plain CAL-GRPO on the guess task with locked problems (issue 19).

    python benchmarks/cost_aware_guess.py                # 2 variants x 3 seeds
    python benchmarks/cost_aware_guess.py --warm-rounds 4 --rounds 4 --seeds 1 --eval-problems 16  # smoke

A share ``--locked`` of the problems cannot be won (the prompt says "locked", every guess is wrong);
any problem may be answered ``pass`` (one token), which ends its episode. Each attempt costs
``--cost``. Per seed, a warm-up of ``--warm-rounds`` of plain V@K training (``calgrpo learn``, tiny
model, ``cal``, an entropy bonus, the learning rate decaying linearly to a tenth) gives the model
both variants start from; then ``--rounds`` more of each variant,
the same seeds: with the cost in training (``--train.cost.per-attempt``) and without it (plain V@K),
both with a KL penalty to the warm-up's model. Each final model is evaluated on the run's fixed
evaluation problems (``calgrpo evaluate``): V@K, mean attempts and completion tokens per episode,
and J = V@K - cost x attempts; beside them the exact optimum of J and V@K (dynamic programming,
``GuessTask.optimal_objective``). Prints one JSON object; runs go to worker processes, one CPU
thread each.

Why a warm-up: from a fresh model, guessing is worth little (V@K near 0.1), so a cost makes ``pass``
the better answer on every problem, and once every episode of a group passes at once the group
carries no signal: the policy is absorbed there (measured: all problems given up within 20 rounds).
Costs teach a policy that can already search when to stop searching. Why the warm-up's entropy
bonus and decay: without the bonus it can settle on a near-deterministic search that misses numbers
and never leaves it (measured: seed 0 stuck 0.09 below the best V@K), and such a policy seldom
samples ``pass``; without the decay a near-optimal search can fall apart late in a long warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
VARIANTS = ("with_cost", "without_cost")
WARM_SEED_OFFSET = 1000


def learn_config(
    args: argparse.Namespace,
    variant: str,
    seed: int,
    output: Path,
    model: str = "tiny:llama",
    warm_up: bool = False,
):
    """The run of one variant from ``model``, or (``warm_up``) the plain V@K warm-up from scratch."""
    from calgrpo.algorithms.cost_config import AttemptCost
    from calgrpo.learn import LearnConfig
    from calgrpo.models.config import TinyModelConfig
    from calgrpo.rollout.config import RolloutConfig, SamplingParams
    from calgrpo.train.config import TrainConfig

    cost = AttemptCost(per_attempt=args.cost if variant == "with_cost" else 0.0)
    return LearnConfig(
        output=output, model=model, seed=seed, rounds=args.warm_rounds if warm_up else args.rounds,
        prompts_per_round=args.prompts,
        tiny=TinyModelConfig(hidden_size=args.hidden, num_layers=2, num_heads=4,
                             intermediate_size=2 * args.hidden, seed=seed),
        task_options={"num_values": args.values, "give_up": True, "locked": args.locked},
        rollout=RolloutConfig(num_attempts=args.attempts, group_size=args.group_size,
                              sampling=SamplingParams(max_new_tokens=args.max_new_tokens)),
        train=TrainConfig(method="cal", learning_rate=args.warm_lr if warm_up else args.lr,
                          lr_schedule=args.warm_schedule if warm_up else "constant",
                          lr_decay_steps=max(1, args.warm_rounds * args.epochs * args.minibatches),
                          lr_final_ratio=args.warm_floor,
                          minibatches=args.minibatches, ppo_epochs=args.epochs, scale_by_std=not args.no_std,
                          micro_batch_size=512, entropy_coef=args.warm_entropy if warm_up else args.entropy,
                          kl_coef=0.0 if warm_up else args.kl, cost=cost),
        eval_problems=args.eval_problems, eval_samples=4, report_to=("none",), show_progress=False,
    )  # fmt: skip


def warm_up(args: argparse.Namespace, seed: int, root: str) -> str:
    """The model both variants start from: ``--warm-rounds`` of plain V@K training (none: a fresh one)."""
    if args.warm_rounds == 0:
        return "tiny:llama"
    import torch

    from calgrpo.learn import run_learn

    torch.set_num_threads(1)
    output = Path(root) / f"warm_seed{seed}"
    return run_learn(learn_config(args, "without_cost", seed, output, warm_up=True))["model"]


def run_one(args: argparse.Namespace, variant: str, seed: int, root: str, model: str) -> dict:
    import torch

    from calgrpo.evaluation.stage import EvaluateConfig, evaluate
    from calgrpo.learn import run_learn
    from calgrpo.rollout.config import RolloutConfig, SamplingParams

    torch.set_num_threads(1)
    output = Path(root) / f"{variant}_seed{seed}"
    started = time.perf_counter()
    # After a warm-up, other round problems than the warm-up's (its seed drew those).
    phase_seed = seed + WARM_SEED_OFFSET if args.warm_rounds else seed
    summary = run_learn(learn_config(args, variant, phase_seed, output, model=model))
    trained_s = time.perf_counter() - started
    episodes = RolloutConfig(
        num_attempts=args.attempts, group_size=4, sampling=SamplingParams(max_new_tokens=args.max_new_tokens)
    )
    metrics = evaluate(EvaluateConfig(
        problems=str(output / "problems" / "eval.parquet"), model=summary["model"],
        output=str(output / "eval"), rollout=episodes, independent_samples=0, cost_per_attempt=(args.cost,),
        report_to=("none",), seed=seed, threads=1,
    ))["candidate"]  # fmt: skip
    k = args.attempts - 1
    v_at_k, attempts, tokens = (
        metrics["v@k"]["mean"][k],
        metrics["spend"]["attempts"][k],
        metrics["spend"]["tokens"][k],
    )
    return {"variant": variant, "seed": seed, f"v@{args.attempts}": v_at_k,
            "v_interval": [metrics["v@k"]["low"][k], metrics["v@k"]["high"][k]],
            "attempts_mean": attempts, "tokens_mean": tokens, "j": metrics["cost_aware"][0]["j@k"][k],
            "train_s": round(trained_s, 1),
            "optimum_here": evaluation_optimum(args, output / "problems" / "eval.parquet")}  # fmt: skip


def evaluation_optimum(args: argparse.Namespace, problems: Path) -> dict:
    """The optimum of J and V@K on these evaluation problems: their own share of locked ones (drawn,
    so not exactly ``--locked``) in the dynamic programme."""
    from calgrpo.io import read_problems
    from calgrpo.tasks import get_task

    drawn = read_problems(problems)
    share = sum(p.meta.get("locked") is True for p in drawn) / len(drawn)
    if share == 1.0:  # every problem locked (a tiny set): give up at once on each
        return {"locked_share": 1.0, "j": -args.cost, f"v@{args.attempts}": 0.0}
    task = get_task("guess", num_values=args.values, give_up=True, locked=share)
    return {"locked_share": round(share, 4), "j": round(task.optimal_objective(args.attempts, args.cost), 4),
            f"v@{args.attempts}": round(task.optimal_v_at_k(args.attempts), 4)}  # fmt: skip


def main() -> None:
    from calgrpo.train.schedule import SCHEDULES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--values", type=int, default=8, help="N")
    parser.add_argument("--attempts", type=int, default=4, help="K")
    parser.add_argument("--locked", type=float, default=0.5, help="share of problems that cannot be won")
    parser.add_argument("--cost", type=float, default=0.05, help="cost of an attempt")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--warm-rounds",
        type=int,
        default=300,
        help="rounds of plain V@K training both variants start from (0: a fresh model)",
    )
    parser.add_argument(
        "--warm-schedule",
        choices=SCHEDULES,
        default="linear",
        help="the warm-up's learning rate: constant, or decaying to --warm-floor over the warm-up",
    )
    parser.add_argument("--warm-floor", type=float, default=0.1, help="the decay's end, a share of --warm-lr")
    parser.add_argument("--rounds", type=int, default=300, help="rounds of each variant after the warm-up")
    parser.add_argument("--prompts", type=int, default=64, help="problems a round (both phases)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--warm-lr", type=float, default=3e-3, help="learning rate of the warm-up")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate after the warm-up")
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="PPO epochs over each round's batch")
    parser.add_argument("--no-std", action="store_true", help="do not divide advantages by the group's std")
    parser.add_argument("--warm-entropy", type=float, default=0.05, help="entropy bonus of the warm-up")
    parser.add_argument("--entropy", type=float, default=0.05, help="entropy bonus after the warm-up")
    parser.add_argument("--kl", type=float, default=0.1, help="KL penalty to the warm-up's model, after it")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--eval-problems", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=1, help="1: one token, a number or pass")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from calgrpo.tasks import get_task

    task = get_task("guess", num_values=args.values, give_up=True, locked=args.locked)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root, ProcessPoolExecutor(args.workers) as pool:
        warm = [pool.submit(warm_up, args, seed, root) for seed in range(args.seeds)]
        jobs = []
        for seed, warmed in enumerate(warm):  # a seed's variants start as soon as its warm-up ends
            model = warmed.result()
            jobs += [pool.submit(run_one, args, variant, seed, root, model) for variant in args.variants]
        runs = [job.result() for job in jobs]
    summary = {}
    for variant in args.variants:
        mine = [run for run in runs if run["variant"] == variant]
        keys = (f"v@{args.attempts}", "attempts_mean", "tokens_mean", "j")
        summary[variant] = {key: round(statistics.fmean(run[key] for run in mine), 4) for key in keys}
        summary[variant]["optimum_here_j"] = round(
            statistics.fmean(run["optimum_here"]["j"] for run in mine), 4
        )
    fewer = None
    if all(variant in summary for variant in VARIANTS):
        fewer = 1 - summary["with_cost"]["attempts_mean"] / summary["without_cost"]["attempts_mean"]
    print(json.dumps({
        "benchmark": "cost_aware_guess", **vars(args), "runs": runs, "mean": summary,
        "attempts_saved_share": None if fewer is None else round(fewer, 4),
        "optimum": {"j": round(task.optimal_objective(args.attempts, args.cost), 4),
                    f"v@{args.attempts}": round(task.optimal_v_at_k(args.attempts), 4)},
        "wall_s": round(time.perf_counter() - started, 1),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
