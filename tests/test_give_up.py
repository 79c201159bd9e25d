"""Giving up (issue 19, item 3): a task's give-up answer is recognised by the verifier as
``gave_up``, only when the problem allows it and only as the whole answer; the rollout ends that
trajectory; training with attempt costs runs end to end (learn and the pipeline's config)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.rollout.engine import Generation, GenerationSession, RolloutEngine
from calgrpo.rollout.loop import rollout
from calgrpo.tasks import get_task, verify_batch
from calgrpo.tasks.base import is_give_up


def test_the_give_up_answer_is_the_whole_answer_and_only_where_allowed() -> None:
    allowing, plain = get_task("guess", num_values=8, give_up=True), get_task("guess", num_values=8)
    problem = allowing.generate(1, seed=0)[0]
    assert problem.prompt.endswith(" or pass") and problem.meta["give_up"] is True
    for text in ("pass", "  Pass.", "PASS!"):
        (verdict,) = verify_batch({"guess": allowing}, [problem], [text])
        assert verdict.gave_up and not verdict.correct and verdict.detail == "gave_up"
    (verdict,) = verify_batch({"guess": allowing}, [problem], [f"pass, it is {problem.answer}"])
    assert verdict.correct and not verdict.gave_up  # an answer that also mentions giving up is judged as one
    assert not is_give_up("give up " * 20, "give up")
    refused = plain.generate(1, seed=0)[0]
    (verdict,) = verify_batch({"guess": plain}, [refused], ["pass"])
    assert not verdict.gave_up and verdict.detail == "invalid"
    natural = get_task("guess", num_values=8, give_up=True, wording="natural").generate(1, seed=0)[0]
    assert "reply give up" in natural.prompt and allowing.give_up_answer(natural) == "give up"


class ScriptedSession(GenerationSession):
    """Each row answers the texts of its script in turn (token ids from the real tokenizer)."""

    def __init__(self, scripts: list[list[list[int]]]):
        self.scripts, self.turn = scripts, 0

    @property
    def num_rows(self) -> int:
        return len(self.scripts)

    def append(self, suffixes: list[list[int]]) -> None:
        assert len(suffixes) == len(self.scripts)

    def generate(self, params, generator) -> list[Generation]:
        self.turn += 1
        return [Generation(s[self.turn - 1], [-1.0] * len(s[self.turn - 1]), "stop") for s in self.scripts]

    def keep(self, rows: list[int]) -> None:
        self.scripts = [self.scripts[i] for i in rows]


class ScriptedEngine(RolloutEngine):
    def __init__(self, scripts):
        self.scripts = scripts

    def open_session(self, contexts):
        return ScriptedSession([self.scripts[i % len(self.scripts)] for i in range(len(contexts))])


def test_a_trajectory_that_gives_up_stops_there(tmp_path) -> None:
    from calgrpo.models.config import TinyModelConfig
    from calgrpo.models.loading import load_policy
    from calgrpo.models.tiny import save_tiny_policy

    task = get_task("guess", num_values=8, give_up=True)
    problem = task.generate(1, seed=1)[0]
    tiny = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64)
    save_tiny_policy(tiny, task.sample_texts(task.generate(16, seed=0)), tmp_path / "policy")
    tiny_policy = load_policy(str(tmp_path / "policy"))  # its vocabulary has "pass", one token
    wrong = str((int(problem.answer) + 1) % 8)
    encode = tiny_policy.tokenizer.encode
    assert len(encode("pass")) == 1
    scripts = [
        [encode(wrong), encode("pass"), encode(wrong)],
        [encode(wrong), encode(wrong), encode(wrong)],
    ]
    records = rollout([problem], ScriptedEngine(scripts), ChatLayout(tiny_policy.tokenizer),
                      RolloutConfig(num_attempts=3, group_size=2, sampling=SamplingParams(max_new_tokens=4)),
                      torch.Generator().manual_seed(0), tasks={"guess": task})  # fmt: skip
    by_sample = {s: [r for r in records if r.sample == s] for s in (0, 1)}
    assert [r.verdict for r in by_sample[0]] == [
        "lower" if int(wrong) > int(problem.answer) else "higher",
        "gave_up",
    ]
    assert by_sample[0][-1].feedback == "" and by_sample[0][-1].reward == 0.0
    assert len(by_sample[1]) == 3


def test_learn_trains_with_attempt_costs_and_the_pipeline_config_carries_them(tmp_path) -> None:
    from calgrpo.configs import from_json, to_json
    from calgrpo.learn import LearnConfig, run_learn
    from calgrpo.models.config import TinyModelConfig
    from calgrpo.pipelines.config import PipelineConfig
    from calgrpo.train.config import AttemptCost, TrainConfig

    train = TrainConfig(cost=AttemptCost(per_attempt=0.1, per_token=0.01))
    config = LearnConfig(output=tmp_path / "run", rounds=1, prompts_per_round=2, eval_problems=4, train=train,
                         task_options={"num_values": 8, "give_up": True}, report_to=("none",),
                         rollout=RolloutConfig(num_attempts=3, group_size=2, sampling=SamplingParams(max_new_tokens=2)),
                         tiny=TinyModelConfig(hidden_size=32, intermediate_size=64), threads=1, show_progress=False)  # fmt: skip
    run_learn(config)
    import json

    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in json.loads(line)]  # fmt: skip
    assert row["rollout/cost_mean"] == pytest.approx(
        0.1 * row["rollout/attempts_mean"] + 0.01 * row["rollout/tokens_mean"]
    )
    assert row["rollout/objective"] == pytest.approx(row["rollout/v@k"] - row["rollout/cost_mean"])
    pipeline = PipelineConfig(train=train, task_options={"give_up": "true"})
    assert from_json(PipelineConfig, to_json(pipeline)).train.cost == AttemptCost(
        per_attempt=0.1, per_token=0.01
    )
    with pytest.raises(Exception, match=r"cost.per_attempt \(--train.cost.per-attempt\) must be a finite"):
        dataclasses.replace(train, cost=AttemptCost(per_attempt=float("inf")))
