"""`calgrpo pipeline run-local` of the train pipeline on the guess task: wall time, V@K gain, overhead.

    python benchmarks/pipeline_local.py [--rounds 3]

Runs the train pipeline in kfp.local (guess problems, tiny Llama) with the untrained tiny model as
the evaluation baseline, so the reported paired difference is the improvement over
the initial model. Orchestration overhead per task is measured separately with a pipeline of no-op
tasks. Prints one JSON object.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from kfp import dsl, local

from calgrpo.pipelines.local import RunLocalConfig, run_local


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def noop(x: int) -> int:
    return x


@dsl.pipeline(name="noop-chain")
def noop_chain(n: int = 0):
    value = noop(x=n)
    for _ in range(9):
        value = noop(x=value.output)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minibatches", type=int, default=1)
    parser.add_argument("--problems", type=int, default=1024)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--values", type=int, default=16)
    parser.add_argument("--attempts", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        config = RunLocalConfig(root=root / "run", rounds=args.rounds, registry=str(root / "registry"),
                                learning_rate=args.lr, ppo_epochs=args.epochs, minibatches=args.minibatches,
                                problems=args.problems, guess_values=args.values, num_attempts=args.attempts,
                                eval_samples=args.eval_samples)  # fmt: skip
        summary = run_local(config)
        wall = time.perf_counter() - started
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "noop"))
        noop_started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            noop_chain(n=1)
        per_task = (time.perf_counter() - noop_started) / 10
    k = args.attempts
    print(json.dumps({
        "benchmark": "pipeline_local", **vars(args), "tasks": 7 + 4 * args.rounds,  # one rollout shard
        "wall_s": round(wall, 1), "v@k_initial": summary["baseline_v@k"][k - 1],
        "v@k_final": summary["v@k"][k - 1], "difference": summary[f"difference_v@{k}"],
        "noop_task_s": round(per_task, 3), "promoted": summary["promoted"],
    }, indent=2))  # fmt: skip

if __name__ == "__main__":
    main()
