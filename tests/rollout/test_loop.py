"""The multi-attempt loop: stops at success, feeds feedback back, writes the attempt schema, reproducible."""

from __future__ import annotations

import zlib

import pytest
import torch

from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.rollout.hf_engine import TransformersEngine
from calgrpo.rollout.loop import rollout
from calgrpo.rollout.records import ATTEMPT_COLUMNS, read_attempts, write_attempts
from calgrpo.tasks import Problem, Task, Verdict


class CoinTask(Task):
    """Test task: answer "yes" is solved by any attempt, "no" never; "coin" by a hash of the text."""

    name = "coin"

    def verify(self, problem: Problem, completion: str) -> Verdict:
        if problem.answer == "coin":
            return Verdict(zlib.crc32(completion.encode()) % 3 == 0, "coin")
        return Verdict(problem.answer == "yes", "fixed")

    def feedback(self, problem: Problem, verdict: Verdict, mode="detailed") -> str:
        return "lower" if mode == "detailed" else "wrong"


def _run(policy, problems, seed=0, config=None):
    layout = ChatLayout(policy.tokenizer)
    engine = TransformersEngine(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids)
    config = config or RolloutConfig(num_attempts=4, group_size=3, sampling=SamplingParams(max_new_tokens=3))
    records = rollout(
        problems,
        engine,
        layout,
        config,
        torch.Generator().manual_seed(seed),
        policy_version=7,
        tasks={"coin": CoinTask()},
    )
    return records, layout


PROBLEMS = [
    Problem(id="solved", task="coin", prompt="hint 1", answer="yes"),
    Problem(id="never", task="coin", prompt="hint 2", answer="no"),
    Problem(id="coin", task="coin", prompt="hint 3", answer="coin"),
]


def test_rollout_stops_at_success_and_runs_to_k_otherwise(tiny_policy) -> None:
    records, _ = _run(tiny_policy, PROBLEMS)
    by_problem = {p.id: [r for r in records if r.problem_id == p.id] for p in PROBLEMS}
    assert sorted((r.sample, r.attempt) for r in by_problem["solved"]) == [(0, 1), (1, 1), (2, 1)]
    assert all(r.reward == 1.0 and r.feedback == "" for r in by_problem["solved"])
    assert len(by_problem["never"]) == 3 * 4
    for sample in range(3):
        trajectory = sorted(
            (r for r in records if r.problem_id == "coin" and r.sample == sample), key=lambda r: r.attempt
        )
        assert [r.attempt for r in trajectory] == list(range(1, len(trajectory) + 1))
        assert all(r.reward == 0.0 for r in trajectory[:-1])
        assert trajectory[-1].reward == 1.0 or len(trajectory) == 4
    assert all(r.policy_version == 7 for r in records)


def test_rollout_feeds_back_feedback_tokens(tiny_policy) -> None:
    records, layout = _run(tiny_policy, PROBLEMS[1:2])
    trajectory = sorted((r for r in records if r.sample == 0), key=lambda r: r.attempt)
    assert trajectory[0].context_token_ids == layout.prompt_ids("hint 2")
    for before, after in zip(trajectory, trajectory[1:], strict=False):
        assert before.feedback == "lower"
        assert after.context_token_ids == layout.feedback_ids("lower", before.completion_token_ids)
    assert trajectory[-1].feedback == ""  # nothing is shown after the last attempt
    for record in trajectory:
        assert len(record.completion_logprobs) == len(record.completion_token_ids) <= 3
        assert record.finish_reason in ("stop", "length")
        assert record.completion == layout.tokenizer.decode(
            record.completion_token_ids, skip_special_tokens=True
        )


def test_rollout_is_reproducible_per_seed(tiny_policy) -> None:
    first, _ = _run(tiny_policy, PROBLEMS)
    again, _ = _run(tiny_policy, PROBLEMS)
    other, _ = _run(tiny_policy, PROBLEMS, seed=1)
    assert first == again
    assert [r.completion_token_ids for r in first] != [r.completion_token_ids for r in other]


def test_attempts_parquet_roundtrip(tiny_policy, tmp_path) -> None:
    records, _ = _run(tiny_policy, PROBLEMS)
    write_attempts(records, tmp_path / "out" / "attempts.parquet")
    import pandas as pd

    assert list(pd.read_parquet(tmp_path / "out" / "attempts.parquet").columns) == ATTEMPT_COLUMNS
    back = read_attempts(tmp_path / "out" / "attempts.parquet")
    assert [r.completion_token_ids for r in back] == [r.completion_token_ids for r in records]
    assert back[0].completion_logprobs == pytest.approx(records[0].completion_logprobs)
    assert [(r.problem_id, r.sample, r.attempt, r.reward, r.feedback) for r in back] == [
        (r.problem_id, r.sample, r.attempt, r.reward, r.feedback) for r in records
    ]


def test_problems_for_round_draws_a_seeded_subset_in_order() -> None:
    from calgrpo.errors import ConfigError
    from calgrpo.rollout.loop import problems_for_round

    problems = [Problem(id=f"p{i}", task="coin", prompt=str(i), answer="yes") for i in range(50)]
    first = problems_for_round(problems, 10, seed=0, round_index=0)
    assert len(first) == 10 == len({p.id for p in first})
    assert [problems.index(p) for p in first] == sorted(problems.index(p) for p in first)
    assert first == problems_for_round(problems, 10, seed=0, round_index=0)
    assert first != problems_for_round(problems, 10, seed=0, round_index=1)
    assert first != problems_for_round(problems, 10, seed=1, round_index=0)
    assert problems_for_round(problems, 0, 0, 0) == problems == problems_for_round(problems, 99, 0, 0)
    with pytest.raises(ConfigError, match=">= 0"):
        problems_for_round(problems, -1, 0, 0)


def test_shards_are_contiguous_and_merge_back_in_order(tmp_path) -> None:
    from calgrpo.errors import ConfigError, InvalidInputError
    from calgrpo.rollout.loop import shard_of
    from calgrpo.rollout.records import AttemptRecord, merge_attempt_shards, write_attempt_shard

    problems = [Problem(id=f"p{i}", task="coin", prompt=str(i), answer="yes") for i in range(10)]
    shards = [shard_of(problems, i, 4) for i in range(4)]
    assert [len(s) for s in shards] == [3, 3, 2, 2] and sum(shards, []) == problems
    assert shard_of(problems, 0, 1) == problems and shard_of(problems[:2], 3, 4) == []
    with pytest.raises(ConfigError):
        shard_of(problems, 4, 4)

    def record(problem_id: str) -> AttemptRecord:
        return AttemptRecord(problem_id=problem_id, sample=0, attempt=1, context_token_ids=[1],
                             completion_token_ids=[2], completion_logprobs=[-0.5], completion="x", reward=0.0,
                             verdict="wrong", feedback="", finish_reason="stop", policy_version=0)  # fmt: skip

    folders = []
    for index, shard in enumerate(shards):
        folders.append(tmp_path / f"s{index}")
        write_attempt_shard([record(p.id) for p in shard], folders[-1], index, 4)
    merged = merge_attempt_shards(list(reversed(folders)))  # collected in any order
    assert [r.problem_id for r in merged] == [p.id for p in problems]
    with pytest.raises(InvalidInputError, match="incomplete"):
        merge_attempt_shards(folders[:3])
    with pytest.raises(InvalidInputError, match="twice"):
        merge_attempt_shards([*folders, folders[0]])
