"""The multi-attempt rollout loop (DESIGN section 4).

All live trajectories of all prompts advance together: one batched generate per attempt index,
verify every attempt, drop the solved trajectories (and those that gave up), append feedback to
the others, repeat up to K.
"""

from __future__ import annotations

import dataclasses

import torch

from calgrpo.errors import ConfigError
from calgrpo.progress import progress
from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import RolloutConfig
from calgrpo.rollout.engine import RolloutEngine
from calgrpo.rollout.records import AttemptRecord
from calgrpo.seeding import generator_for
from calgrpo.tasks import Problem, Task, get_task, verify_batch


def rollout(
    problems: list[Problem],
    engine: RolloutEngine,
    layout: ChatLayout,
    config: RolloutConfig,
    generator: torch.Generator,
    *,
    policy_version: int = 0,
    policy: str = "",
    tasks: dict[str, Task] | None = None,
    show_progress: bool = False,
) -> list[AttemptRecord]:
    """Run G multi-attempt episodes per problem; one record per attempt, ordered by attempt index.

    ``generator`` supplies every random draw, so the same seed and inputs give the same records.
    ``policy``: the generating model's content fingerprint, recorded so training can check it.
    """
    tasks = dict(tasks or {})
    created = {p.task for p in problems} - tasks.keys()
    tasks.update({name: get_task(name) for name in created})
    config = with_task_budget(config, [tasks[p.task] for p in problems])
    try:
        records = _rollout(problems, engine, layout, config, generator, policy_version, tasks, show_progress)
        return [dataclasses.replace(r, policy=policy) for r in records] if policy else records
    finally:
        for name in created:  # worker pools of tasks made here die with the call
            tasks[name].close()


def _rollout(problems, engine, layout, config, generator, policy_version, tasks, show_progress):
    tokenizer = layout.tokenizer
    # Row r of the session is trajectory (problem index, sample) = divmod(r, G).
    owners = [(p, s) for p in range(len(problems)) for s in range(config.group_size)]
    prompt_ids = [layout.prompt_ids(tasks[problem.task].format_prompt(problem)) for problem in problems]
    contexts = [prompt_ids[p] for p, _ in owners]
    session = engine.open_session(contexts)
    live = list(range(len(owners)))
    records: list[AttemptRecord] = []
    bar = progress(range(1, config.num_attempts + 1), desc="rollout attempts", enabled=show_progress)
    for attempt in bar:
        generations = session.generate(config.sampling, generator)
        live_problems = [problems[owners[row][0]] for row in live]
        completions = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations]
        verdicts = verify_batch(tasks, live_problems, completions)
        keep, feedback_ids = [], []
        for position, (row, generation) in enumerate(zip(live, generations, strict=True)):
            problem, sample = live_problems[position], owners[row][1]
            completion, verdict = completions[position], verdicts[position]
            last = verdict.correct or verdict.gave_up or attempt == config.num_attempts
            feedback = "" if last else tasks[problem.task].feedback(problem, verdict, config.feedback_mode)
            records.append(
                AttemptRecord(
                    problem_id=problem.id,
                    sample=sample,
                    attempt=attempt,
                    context_token_ids=contexts[row],
                    completion_token_ids=generation.token_ids,
                    completion_logprobs=generation.logprobs,
                    completion=completion,
                    reward=1.0 if verdict.correct else 0.0,
                    verdict=verdict.detail,
                    feedback=feedback,
                    finish_reason=generation.finish_reason,
                    policy_version=policy_version,
                    temperature=config.sampling.temperature,
                )
            )
            if not last:
                keep.append(position)
                contexts[row] = layout.feedback_ids(feedback, generation.token_ids)
                feedback_ids.append(contexts[row])
        live = [live[i] for i in keep]
        if not live:
            break
        session.keep(keep)
        session.append(feedback_ids)
    return records


def with_task_budget(config: RolloutConfig, tasks: list[Task]) -> RolloutConfig:
    """``config`` with the attempt length set: its own, or the largest budget of ``tasks``."""
    if config.sampling.max_new_tokens is not None or not tasks:
        return config
    budget = max(task.default_max_new_tokens for task in tasks)
    return dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, max_new_tokens=budget))


def problems_for_round(problems: list[Problem], count: int, seed: int, round_index: int) -> list[Problem]:
    """``count`` of ``problems`` drawn without replacement for round ``round_index`` (all when
    ``count`` is 0 or covers them), in their original order; the same draw for the same seed."""
    if count < 0:
        raise ConfigError(f"problems per round must be >= 0 (0: all), got {count}")
    if count == 0 or count >= len(problems):
        return list(problems)
    order = torch.randperm(len(problems), generator=generator_for(seed, "round-problems", round_index))
    return [problems[i] for i in sorted(order[:count].tolist())]


def shard_of(problems: list[Problem], shard_index: int, num_shards: int) -> list[Problem]:
    """Contiguous shard ``shard_index`` of ``num_shards`` (sizes differ by at most one), so the shards
    concatenated in index order give back ``problems`` in order."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"shard {shard_index} of {num_shards}: need 0 <= shard < num_shards")
    base, extra = divmod(len(problems), num_shards)
    start = shard_index * base + min(shard_index, extra)
    return problems[start : start + base + (shard_index < extra)]
