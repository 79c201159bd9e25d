"""What `pipeline run-local` shows on the terminal: a line per task outside the rounds, one per round,
every failure; kfp.local's full output goes to the log."""

from __future__ import annotations

import io

from calgrpo.pipelines.local import TaskLines


def _finished(task: str, status: str = "SUCCESS") -> str:
    return f"\x1b[32m12:00:00.000 - INFO - Task '{task}' finished with status {status}\x1b[0m\n"


def test_a_round_is_one_line_and_failures_always_show():
    log, terminal = io.StringIO(), io.StringIO()
    lines = TaskLines(log, terminal, verbose=False, rounds=2)
    events = ["prepare-problems", "initial-model", "rollout", "rollout", "merge-attempts", "verify", "train",
              "rollout-2", "merge-attempts-2", "verify-2", "train-2", "evaluate-run", "promote"]  # fmt: skip
    for task in events:
        lines.write("executor output of " + task + "\n" + _finished(task))
    lines.write("partial line with no end")
    lines.write(_finished("verify-3", "FAILURE"))
    shown = terminal.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split()[0] for line in shown] == [
        "prepare-problems", "initial-model", "round", "round", "evaluate-run", "promote", "verify-3",
    ]  # fmt: skip
    assert "round 1/2" in shown[2] and "round 2/2" in shown[3] and shown[-1].endswith("failure")
    assert log.getvalue().count("executor output of") == len(events)  # nothing is lost from the log


def test_verbose_shows_everything_and_the_evaluate_pipeline_every_task():
    terminal = io.StringIO()
    TaskLines(io.StringIO(), terminal, verbose=True, rounds=2).write("anything\n" + _finished("verify"))
    assert terminal.getvalue().startswith("anything\n")
    terminal = io.StringIO()
    TaskLines(io.StringIO(), terminal, verbose=False, rounds=0).write(_finished("verify"))
    assert "verify" in terminal.getvalue()


def test_local_paths_that_kfp_local_would_mangle_are_linked(tmp_path) -> None:
    from calgrpo.pipelines.local import _kfp_local_safe

    model = tmp_path / "venv" / "lib" / "python3.11" / "model.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    safe = _kfp_local_safe(str(model), tmp_path / "root")
    assert "python3" not in safe and safe.endswith(".gguf") and open(safe, "rb").read() == b"GGUF"
    assert _kfp_local_safe(str(model), tmp_path / "root") == safe  # the same link again
    for untouched in ("s3://bucket/python3/model", "org/python3-model", None, str(tmp_path / "plain.gguf")):
        assert _kfp_local_safe(untouched, tmp_path / "root") == untouched


def test_a_rounds_line_carries_the_numbers_its_train_task_printed():
    from calgrpo.trackers import ROUND_MARKER

    terminal = io.StringIO()
    lines = TaskLines(io.StringIO(), terminal, verbose=False, rounds=2)
    numbers = "round 1/2  V@4 0.250  loss -0.0100  kl 0.0000  entropy 1.500  clip 0.000  812 tok/s"
    lines.write("rollout output\n" + _finished("rollout") + f"12:00 {ROUND_MARKER}{numbers}\n" + _finished("train"))
    lines.write(_finished("train-2"))  # a train task that printed nothing keeps the plain label
    shown = terminal.getvalue().splitlines()
    assert numbers in shown[0] and shown[0].endswith("success")
    assert "round 2/2 (rollout, verify, train)" in shown[1]


def test_the_summary_shows_the_best_possible_v_at_k_beside_the_model():
    """For a synthetic task that can compute it, the optimum is printed under the model's V@k: with 4
    values and a hint right half the time, V@1 = 0.5 (the hint) and V@3 = 1 (hint, then search)."""
    from calgrpo.commands_infra import describe_run
    from calgrpo.pipelines.config import PipelineConfig
    from calgrpo.pipelines.local import best_possible_v_at_k

    best = best_possible_v_at_k(PipelineConfig(task="guess", task_options={"num_values": 4}), 3)
    assert best is not None and best[0] == 0.5 and best[2] == 1.0 and best[0] < best[1] < best[2]
    assert best_possible_v_at_k(PipelineConfig(task="guess", dataset="problems.jsonl"), 3) is None
    result = {"pipeline": "train", "elapsed_s": 1.0, "v@k": [0.1, 0.2, 0.3], "optimum_v@k": best,
              "report": "report.html"}  # fmt: skip
    lines = describe_run(result)
    assert any(line.strip().startswith("optimum:") and "V@3=1.000" in line for line in lines)
    assert not any("optimum" in line for line in describe_run({**result, "optimum_v@k": None}))
