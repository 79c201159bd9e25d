"""`calgrpo pipeline run-local` of the train pipeline on a run file: wall time, V@K gain, overhead.

    python benchmarks/pipeline_local.py [--config configs/quickstart.yaml] [--rounds 16] [--lr 1e-2]

Runs the train pipeline in kfp.local on the run file (by default `make run`'s: guess problems, a
tiny Llama), the flags overriding it, with an empty registry in a temporary folder, so the
reported paired difference is the improvement over the initial model. Orchestration overhead per
task is measured separately with a pipeline of no-op tasks. Prints one JSON object.
"""

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from kfp import dsl, local

from calgrpo.cli import parse
from calgrpo.pipelines.local import run_local


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
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--rounds", type=int, help="override the file's rounds")
    parser.add_argument("--lr", type=float, help="override the file's train.learning_rate")
    args = parser.parse_args()
    flags = ["pipeline", "run-local", "--config", args.config]
    flags += ["--rounds", str(args.rounds)] if args.rounds else []
    flags += ["--train.learning-rate", str(args.lr)] if args.lr else []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        config, _ = parse(flags)  # the file read and validated as the command reads it
        config = dataclasses.replace(config, root=root / "run", registry=str(root / "registry"))
        summary = run_local(config)
        wall = time.perf_counter() - started
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "noop"))
        noop_started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            noop_chain(n=1)
        per_task = (time.perf_counter() - noop_started) / 10
    k = config.rollout.num_attempts
    print(json.dumps({
        "benchmark": "pipeline_local", **vars(args), "rounds": config.rounds,
        "learning_rate": config.train.learning_rate, "tasks": 7 + 4 * config.rounds,  # one rollout shard
        "wall_s": round(wall, 1), "v@k_initial": summary["baseline_v@k"][k - 1],
        "v@k_final": summary["v@k"][k - 1], "difference": summary[f"difference_v@{k}"],
        "noop_task_s": round(per_task, 3), "promoted": summary["promoted"],
    }, indent=2))  # fmt: skip

if __name__ == "__main__":
    main()
