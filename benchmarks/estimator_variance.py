"""Bias and gradient variance of every advantage method on enumerable toys; prints one JSON object.

    python benchmarks/estimator_variance.py            # full: 200,000 groups per setting
    python benchmarks/estimator_variance.py --quick    # 20,000 groups, for routine checks

Exact part: DESIGN's tabular toy (3 values, K = 3), every group of G = 3 and 4 enumerated, so bias
and total variance E||g - E g||^2 are exact. Sampled part: the tabular toy and a larger random
guessing game (4 values, K = 4, 2,340 parameters) at G = 4, 8, 16. Groups are split into batches
with fixed seeds that every method shares (common random numbers), so the variance ratio of each
method to `trajectory` gets a standard error from the spread over batches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from calgrpo.algorithms import ADVANTAGE_METHODS
from calgrpo.toys.guessing import design_exact_check_toy, random_guessing_toy
from calgrpo.toys.tables import (
    Toy,
    cosine,
    exact_estimator_moments,
    relative_error,
    sampled_estimator_moments,
    true_gradient,
)

REFERENCE = "trajectory"
MIN_TOUCHES = 1000


def exact_section(toy: Toy, group_size: int) -> dict:
    truth = true_gradient(toy)
    methods = {}
    for name in ADVANTAGE_METHODS:
        moments = exact_estimator_moments(toy, group_size, name)
        methods[name] = {
            "relative_error": relative_error(moments.mean, truth),
            "cosine": cosine(moments.mean, truth),
            "total_variance": moments.total_variance,
        }
    ref = methods[REFERENCE]["total_variance"]
    for row in methods.values():
        row["variance_ratio_vs_trajectory"] = row["total_variance"] / ref
    return {"toy": toy.name, "group_size": group_size, "exact": True, "methods": methods}


def sampled_section(toy: Toy, group_size: int, num_groups: int, num_batches: int, seed: int) -> dict:
    truth = true_gradient(toy)
    per_batch = num_groups // num_batches
    methods = {}
    for name in ADVANTAGE_METHODS:
        batches = [
            sampled_estimator_moments(
                toy, group_size, name, num_groups=per_batch, generator=torch.Generator().manual_seed(seed + b)
            )
            for b in range(num_batches)
        ]
        mean = torch.stack([m.mean for m in batches]).mean(0)
        coord_var = torch.stack([m.coord_variance for m in batches]).mean(0)
        totals = torch.tensor([m.total_variance for m in batches], dtype=torch.float64)
        standard_error = (coord_var / (per_batch * num_batches)).sqrt()
        touches = torch.stack([m.touch_counts for m in batches]).sum(0)
        well_sampled = touches >= MIN_TOUCHES
        methods[name] = {
            "relative_error": relative_error(mean, truth),
            "cosine": cosine(mean, truth),
            # ||noise|| expected from sampling alone; a relative error near it is no evidence of bias.
            "noise_floor": float((coord_var.sum() / (per_batch * num_batches)).sqrt() / truth.norm()),
            # Largest |mean - truth| / SE over coordinates touched by >= MIN_TOUCHES groups, where the
            # standard error itself is trustworthy; rarer coordinates are counted, not scored.
            "max_abs_z": float(((mean - truth).abs()[well_sampled] / standard_error[well_sampled]).max()),
            "scored_coordinates": int(well_sampled.sum()),
            "total_variance": float(totals.mean()),
            "total_variance_se": float(totals.std() / num_batches**0.5),
            "_batch_totals": totals,
        }
    ref_totals = methods[REFERENCE]["_batch_totals"]
    for row in methods.values():
        ratios = row.pop("_batch_totals") / ref_totals
        row["variance_ratio_vs_trajectory"] = float(ratios.mean())
        row["variance_ratio_se"] = float(ratios.std() / num_batches**0.5)
    return {
        "toy": toy.name,
        "group_size": group_size,
        "exact": False,
        "num_groups": per_batch * num_batches,
        "methods": methods,
    }


def print_summary(results: list[dict]) -> None:
    """A readable table on stderr; stdout stays one JSON object."""
    print(
        f"{'toy':<20}{'G':>3}  {'method':<20}{'rel. error':>11}{'noise':>8}{'var / trajectory':>20}",
        file=sys.stderr,
    )
    for section in results:
        for name, row in section["methods"].items():
            noise = f"{row['noise_floor']:.4f}" if "noise_floor" in row else "exact"
            ratio = f"{row['variance_ratio_vs_trajectory']:.4f}"
            if "variance_ratio_se" in row:
                ratio += f" +- {row['variance_ratio_se']:.4f}"
            print(
                f"{section['toy']:<20}{section['group_size']:>3}  {name:<20}{row['relative_error']:>11.4f}"
                f"{noise:>8}{ratio:>20}",
                file=sys.stderr,
            )


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20,000 groups per setting instead of 200,000")
    parser.add_argument(
        "--groups", type=int, default=None, help="groups per sampled setting (overrides --quick)"
    )
    parser.add_argument("--batches", type=int, default=10, help="seeded batches the groups are split into")
    parser.add_argument("--seed", type=int, default=0, help="base seed; batch b uses seed + b")
    parser.add_argument(
        "--group-sizes", type=int, nargs="+", default=[4, 8, 16], help="G of the sampled part"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    num_groups = args.groups or (20_000 if args.quick else 200_000)
    if num_groups < 2 * args.batches:
        parser.error(f"--groups must be at least 2 x --batches = {2 * args.batches}")

    started = time.perf_counter()
    tabular = design_exact_check_toy()
    larger = random_guessing_toy(num_values=4, num_attempts=4, seed=0)
    results = [exact_section(tabular, 3), exact_section(tabular, 4)]
    for toy in (tabular, larger):
        for group_size in args.group_sizes:
            print(f"sampling {toy.name} G={group_size} ...", file=sys.stderr, flush=True)
            results.append(sampled_section(toy, group_size, num_groups, args.batches, args.seed))
    report = {
        "benchmark": "estimator_variance",
        "config": {
            "num_groups": num_groups,
            "batches": args.batches,
            "seed": args.seed,
            "group_sizes": args.group_sizes,
            "reference": REFERENCE,
        },
        "machine": machine(),
        "commit": git_commit(),
        "results": results,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print_summary(results)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
