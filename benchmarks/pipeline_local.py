"""`calgrpo pipeline run-local` of the train pipeline on the guess task: wall time, V@K gain, overhead.

    python benchmarks/pipeline_local.py [--rounds 3]

Runs the train pipeline in kfp.local (N = 8, K = 3, 64 problems, tiny Llama) with the untrained
tiny model as the evaluation baseline, so the reported paired difference is the improvement over
the initial model. Orchestration overhead per task is measured separately with a pipeline of no-op
tasks. Prints one JSON object.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from kfp import dsl, local

from calgrpo.models.config import TinyModelConfig
from calgrpo.models.tiny import save_tiny_policy
from calgrpo.pipelines.local import RunLocalConfig, run_local
from calgrpo.tasks import get_task


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        task = get_task("guess")
        baseline = save_tiny_policy(
            TinyModelConfig(), task.sample_texts(task.generate(512, 0)), root / "baseline"
        )
        started = time.perf_counter()
        config = RunLocalConfig(root=root / "run", rounds=args.rounds, registry=str(root / "registry"),
                                baseline_uri=str(baseline), learning_rate=args.lr)  # fmt: skip
        summary = run_local(config)
        wall = time.perf_counter() - started
        (version,) = (root / "registry" / "models" / "policy" / "versions").iterdir()
        metrics = json.loads((version / "metrics.json").read_text())
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "noop"))
        noop_started = time.perf_counter()
        noop_chain(n=1)
        per_task = (time.perf_counter() - noop_started) / 10
    k = metrics["num_attempts"]
    print(json.dumps({
        "benchmark": "pipeline_local", "rounds": args.rounds, "tasks": 2 + 3 * args.rounds + 2,
        "wall_s": round(wall, 1),
        "v@k_initial": metrics["baseline"]["v@k"]["mean"][k - 1],
        "v@k_final": metrics["candidate"]["v@k"]["mean"][k - 1],
        "difference": {key: metrics["difference"][key][k - 1] for key in ("mean", "low", "high")},
        "noop_task_s": round(per_task, 3),
        "promoted": summary["current"] is not None,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
