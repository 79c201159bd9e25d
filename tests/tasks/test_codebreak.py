"""The codebreak task, added as one module (docs/development.md): options, generator, verifier,
feedback, ingest check, and a run of `calgrpo learn` on it with nothing else changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calgrpo.errors import ConfigError
from calgrpo.ingest.pipeline import IngestConfig, ValidationFailed, ingest
from calgrpo.tasks import TASKS, Verdict, synthetic_task
from calgrpo.tasks.codebreak import CodebreakTask


def test_generate_is_seeded_and_within_the_options() -> None:
    task = synthetic_task("codebreak", {"length": "4", "digits": "3"})
    problems = task.generate(200, seed=1)
    assert problems == task.generate(200, seed=1) and problems != task.generate(200, seed=2)
    assert {len(p.answer) for p in problems} == {4} and set("".join(p.answer for p in problems)) == set("012")
    assert problems[7].id == "codebreak-000007" and problems[0].prompt == "code of 4 digits 0 to 2"


def test_the_verifier_counts_places_and_cannot_be_gamed() -> None:
    task = synthetic_task("codebreak")
    problem = task.generate(1, seed=0)[0]
    code = problem.answer
    assert task.verify(problem, " ".join(code)).correct
    assert task.verify(problem, f"{code}, my answer").correct
    wrong = "".join(str((int(c) + 1) % 4) for c in code)
    assert task.verify(problem, code[:2] + wrong[2]) == Verdict(False, "partial", "2 right")
    assert task.feedback(problem, task.verify(problem, wrong)) == "0 right"
    assert task.feedback(problem, task.verify(problem, wrong), mode="binary") == "wrong"
    # Only the first `length` digits count: a long list of codes is one wrong guess, not many tries.
    every_code = " ".join(f"{a}{b}{c}" for a in range(4) for b in range(4) for c in range(4))
    assert task.verify(problem, every_code).correct == every_code.startswith(code)
    # Digits of other scripts are not digits here; beyond 256 characters nothing is read.
    arabic = "".join(chr(0x0660 + int(c)) for c in code)
    assert task.verify(problem, arabic).detail == "invalid"
    assert task.verify(problem, " " * 300 + code).detail == "invalid"
    assert code not in task.feedback(problem, Verdict(False, "invalid"))


def test_options_are_checked_with_their_names() -> None:
    with pytest.raises(ConfigError, match="length must be in 1..6"):
        synthetic_task("codebreak", {"length": "9"})
    with pytest.raises(ConfigError, match="has no option 'num_values'; its options: length, digits"):
        synthetic_task("codebreak", {"num_values": "8"})
    with pytest.raises(ConfigError, match="task_options.digits: 'x' is not of type int"):
        synthetic_task("codebreak", {"digits": "x"})
    assert isinstance(TASKS.get("codebreak")(length=2), CodebreakTask)


def test_ingest_refuses_a_code_the_verifier_could_never_match(tmp_path) -> None:
    good = synthetic_task("codebreak").generate(2, seed=0)
    rows = [{**p.to_row(), "meta": p.meta} for p in good]
    rows.append({**rows[0], "id": "bad", "answer": "1239", "prompt": "another"})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValidationFailed, match=r"answer_ok.*\n.*'bad'.*not a code"):
        ingest(IngestConfig(format="jsonl", input=str(source), output=str(tmp_path / "out")))
    source.write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))
    card = ingest(IngestConfig(format="jsonl", input=str(source), output=str(tmp_path / "ok"), eval_fraction=0.5))
    assert card["published"] == 2


@pytest.mark.slow
def test_learn_trains_on_the_new_task_with_no_other_change(tmp_path: Path) -> None:
    output = tmp_path / "run"
    learn = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "learn", "--output", str(output), "--task", "codebreak",
         "--task-options", "length", "2", "digits", "3", "--rounds", "2", "--prompts-per-round", "4",
         "--rollout.num-attempts", "3", "--rollout.group-size", "4", "--eval-problems", "8",
         "--train.minibatches", "2", "--threads", "1", "--no-show-progress", "--json"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert learn.returncode == 0, learn.stderr[-3000:]
    summary = json.loads(learn.stdout)
    assert {"eval/v@1", "eval/v@3"} <= set(summary["before"]) and summary["optimizer_steps"] == 2 * 2
    config = json.loads((output / "config.json").read_text())
    assert config["task"] == "codebreak" and config["task_options"] == {"length": "2", "digits": "3"}
    assert config["rollout"]["sampling"]["max_new_tokens"] is None  # the task's budget, 8 tokens
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert len([row for row in rows if "train/loss" in row]) == 2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output / "model")
    assert len(tokenizer("1 0", add_special_tokens=False)["input_ids"]) == 2  # a digit is one token
