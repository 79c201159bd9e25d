"""The advantage methods compared with statistical power, and their gradient variance on the LM (issue 21).

    python benchmarks/method_comparison.py                # 4 methods x 10 seeds, then the variance
    python benchmarks/method_comparison.py --seeds 2 --rounds 4 --eval-points 2 --variance-batches 4  # smoke

1. **Learning.** ``calgrpo learn`` on hinted guessing (tiny model, the settings of
   ``synthetic_guess.py``) with ``cal``, ``trajectory``, ``naive`` and ``single``, the same seeds for
   every method: seed s gives every method the same initial model, the same round problems, the same
   evaluation problems and the same random streams (common random numbers, so the paired differences
   lose the seed-to-seed spread the methods share). Per method: mean final V@K over seeds with a 95%
   t-interval, and the learning-curve area (mean V@K over the evaluation points from round 0: what
   a run has on average along the way, i.e. speed). Paired over seeds: cal - trajectory and
   cal - naive, final and area, with t-intervals.
2. **Gradient variance on the LM policy.** At the initial model and at the trained ``cal`` model of
   the first seed: ``--variance-batches`` independent rollouts of G episodes on each of
   ``--variance-prompts`` fixed problems, on the same parameters; from each rollout the policy
   gradient with ``cal`` and with ``trajectory`` weights (the same episodes, on-policy, ratio 1).
   Both are unbiased for grad V@K, so their variance across rollouts is comparable:
   ``E ||g - mean g||^2`` per method and the ratio cal / trajectory, with a paired bootstrap interval
   over rollouts, for each G in ``--variance-groups``.

Prints one JSON object; runs go to worker processes, one CPU thread each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic_guess, beside this file
from synthetic_guess import METHODS, add_run_arguments, learn_config, run_one  # noqa: E402

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def t_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval over independent values (seeds)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(values)}
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    low, high = round(mean - half, 4), round(mean + half, 4)
    return {"mean": round(mean, 4), "low": low, "high": high, "n": len(values)}


def curve_area(curve: list[tuple[int, float]]) -> float:
    """Mean V@K along the run: trapezoid area under (round, V@K) over the rounds covered."""
    if len(curve) < 2:
        return curve[0][1] if curve else 0.0
    area = sum((r1 - r0) * (v0 + v1) / 2 for (r0, v0), (r1, v1) in zip(curve, curve[1:], strict=False))
    return area / (curve[-1][0] - curve[0][0])


def learning_summary(runs: list[dict], methods: list[str], attempts: int) -> dict:
    """Per-method intervals and paired cal - other differences (final V@K and curve area)."""
    key = f"v@{attempts}"
    by = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    final = {m: [by[m, s]["final"][key] for s in seeds] for m in methods}
    area = {m: [curve_area(by[m, s]["curve"]) for s in seeds] for m in methods}
    per_method = {m: {"final": t_interval(final[m]), "area": t_interval(area[m])} for m in methods}
    summary = {"per_method": per_method}
    if "cal" in methods:
        summary["paired"] = {
            f"cal - {other}": {
                "final": t_interval([a - b for a, b in zip(final["cal"], final[other], strict=True)]),
                "area": t_interval([a - b for a, b in zip(area["cal"], area[other], strict=True)]),
            }
            for other in methods
            if other != "cal"
        }
    return summary


def policy_gradient(scorer, params, batch, method: str):
    """The on-policy gradient of the CAL-GRPO loss with ``method``'s weights, flattened: (D,)."""
    import torch

    from calgrpo.algorithms.advantages import attempt_advantages

    advantages = attempt_advantages(batch.rewards, batch.attempted, method)
    trajectories = advantages.shape[0] * advantages.shape[1]
    token_weights = advantages.view(trajectories, -1).gather(1, batch.token_attempt)
    logprobs, _ = scorer(batch.input_ids, batch.attention_mask, batch.loss_mask)
    weighted = torch.where(batch.loss_mask, token_weights * logprobs, torch.zeros_like(logprobs))
    grads = torch.autograd.grad(-weighted.sum() / trajectories, params, allow_unused=True)
    filled = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.flatten() for g in filled])


def gradient_variance(args: argparse.Namespace, model: str, label: str, root: Path) -> list[dict]:
    """Variance of the cal and trajectory gradients across independent rollouts, per G."""
    import numpy as np
    import torch

    from calgrpo.learn_loop import LearnLoop
    from calgrpo.rollout.loop import rollout
    from calgrpo.train.batch import build_batch
    from calgrpo.train.scoring import PolicyScorer

    torch.set_num_threads(1)
    config = dataclasses.replace(learn_config(args, "cal", 0), model=model, output=root / f"variance_{label}")
    loop = LearnLoop(config)
    loop.policy.model.eval()  # no dropout: only the episodes vary
    scorer = PolicyScorer(loop.policy.model)
    params = [p for p in loop.policy.model.parameters() if p.requires_grad]
    problems = config.synthetic_task().generate(args.variance_prompts, seed=12345, id_prefix="variance")
    rows = []
    for group in args.variance_groups:
        rollout_config = dataclasses.replace(config.rollout, group_size=group)
        grads = {"cal": [], "trajectory": []}
        for draw in range(args.variance_batches):
            generator = torch.Generator().manual_seed(1_000_003 * group + draw)
            with torch.no_grad():
                records = rollout(
                    problems, loop.engine, loop.layout, rollout_config, generator, tasks=loop.tasks
                )
            batch = build_batch(records, config.rollout.num_attempts, loop.policy.tokenizer.pad_token_id)
            for method in grads:
                grads[method].append(policy_gradient(scorer, params, batch, method).double().numpy())
        stacked = {m: np.stack(g) for m, g in grads.items()}  # (B, D)
        deviations = {m: ((g - g.mean(0)) ** 2).sum(1) for m, g in stacked.items()}  # (B,)
        variance = {m: float(d.mean() * len(d) / (len(d) - 1)) for m, d in deviations.items()}
        rng = np.random.default_rng(0)
        picks = rng.integers(0, args.variance_batches, size=(400, args.variance_batches))  # paired resamples
        ratios = [
            ((stacked["cal"][p] - stacked["cal"][p].mean(0)) ** 2).sum()
            / max(((stacked["trajectory"][p] - stacked["trajectory"][p].mean(0)) ** 2).sum(), 1e-30)
            for p in picks
        ]
        rows.append({
            "model": label, "group_size": group, "rollouts": args.variance_batches,
            "prompts": args.variance_prompts, "variance": variance,
            "ratio_cal_over_trajectory": round(variance["cal"] / variance["trajectory"], 4),
            "ratio_interval": [round(float(np.quantile(ratios, q)), 4) for q in (0.025, 0.975)],
            "mean_gradient_norm": round(float(np.linalg.norm(stacked["cal"].mean(0))), 6),
        })  # fmt: skip
        print(f"variance {label} G={group}: ratio {rows[-1]['ratio_cal_over_trajectory']}", file=sys.stderr)
    return rows


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    add_run_arguments(parser)
    parser.set_defaults(
        num_values=16,
        attempts=4,
        rounds=300,
        eval_points=6,
        eval_problems=128,
        output=Path("runs/method_comparison"),
    )  # the published run (docs/benchmarks.md)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--variance-groups", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--variance-batches", type=int, default=64, help="independent rollouts per G")
    parser.add_argument("--variance-prompts", type=int, default=16, help="fixed problems per rollout")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        jobs = [pool.submit(run_one, args, m, s) for s in range(args.seeds) for m in args.methods]
        runs = []
        for job in jobs:
            runs.append(job.result())
            run = runs[-1]
            final = run["final"][f"v@{args.attempts}"]
            print(f"{run['method']:<11} seed {run['seed']}: V@{args.attempts} {final:.3f}", file=sys.stderr)
        trained = next(r["model"] for r in runs if r["method"] == "cal" and r["seed"] == 0)
        variance_jobs = [
            pool.submit(gradient_variance, args, model, label, args.output)
            for model, label in (("tiny:llama", "initial"), (trained, "trained_cal_seed0"))
        ]
        variance = [row for job in variance_jobs for row in job.result()]
    from calgrpo.tasks import get_task

    report = {
        "benchmark": "method_comparison",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "optimum": round(get_task("guess", num_values=args.num_values).optimal_v_at_k(args.attempts), 4),
        "learning": learning_summary(runs, args.methods, args.attempts),
        "gradient_variance": variance,
        "runs": [{k: v for k, v in r.items() if k != "model"} for r in runs],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
