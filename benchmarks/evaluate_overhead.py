"""Evaluation overhead: time spent beyond rollout + verification in `calgrpo evaluate`.

    python benchmarks/evaluate_overhead.py [--problems 256 --samples 4]

Two tiny guess models (different seeds) as candidate and baseline, N = 16, K = 4. The overhead
(model loading, statistics with 2,000 bootstrap resamples, reports, plot, publishing) is reported
as a share of the stage's wall time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from calgrpo.evaluation.stage import EvaluateConfig, evaluate
from calgrpo.io import write_problems
from calgrpo.models.config import TinyModelConfig
from calgrpo.models.tiny import save_tiny_policy
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("guess", num_values=16)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        texts = task.sample_texts(task.generate(256, 0))
        models = [str(save_tiny_policy(TinyModelConfig(seed=s), texts, root / f"m{s}")) for s in (0, 1)]
        write_problems(task.generate(args.problems, seed=7), root / "problems.parquet")
        config = EvaluateConfig(
            problems=str(root / "problems.parquet"),
            model=models[0],
            baseline=models[1],
            output=str(root / "out"),
            rollout=RolloutConfig(
                num_attempts=4, group_size=args.samples, sampling=SamplingParams(max_new_tokens=1)
            ),
        )
        metrics = evaluate(config)
    report = {"benchmark": "evaluate_overhead", "problems": args.problems, "samples": args.samples}
    print(json.dumps({**report, **metrics["timing"]}, indent=2))


if __name__ == "__main__":
    main()
