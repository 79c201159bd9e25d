"""Transcripts of an evaluation: every attempt's text, verdict and feedback, and the few episodes the
report shows (a success after failed attempts first: what feedback is for)."""

from __future__ import annotations

from typing import Any

from calgrpo.rollout.records import AttemptRecord
from calgrpo.tasks import Problem

TRANSCRIPT_COLUMNS = ["model", "problem_id", "sample", "attempt", "completion", "verdict", "reward",
                      "feedback", "finish_reason", "tokens"]  # fmt: skip
SHOWN_EPISODES = 3
SHOWN_CHARS = 600
"""A shown prompt or attempt is cut to this many characters (the file keeps them whole)."""


def transcript_rows(records: list[AttemptRecord], model: str) -> list[dict[str, Any]]:
    return [
        {"model": model, "problem_id": r.problem_id, "sample": r.sample, "attempt": r.attempt,
         "completion": r.completion, "verdict": r.verdict, "reward": r.reward, "feedback": r.feedback,
         "finish_reason": r.finish_reason, "tokens": len(r.completion_token_ids)}
        for r in records
    ]  # fmt: skip


def example_episodes(problems: list[Problem], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to SHOWN_EPISODES of the candidate's episodes, one per problem, in this order of interest:
    solved after a failed attempt, never solved, solved at once. Each: problem id, prompt, attempts."""
    episodes: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row["model"] == "candidate":
            episodes.setdefault((row["problem_id"], row["sample"]), []).append(row)
    prompts = {p.id: p.prompt for p in problems}

    def interest(attempts: list[dict[str, Any]]) -> int:
        solved = any(a["reward"] > 0 for a in attempts)
        return 0 if solved and len(attempts) > 1 else 1 if not solved else 2

    chosen, seen = [], set()
    for (problem_id, _), attempts in sorted(episodes.items(), key=lambda item: (interest(item[1]), item[0])):
        if problem_id in seen:
            continue
        seen.add(problem_id)
        shown = [{key: a[key] for key in ("attempt", "completion", "verdict", "reward", "feedback")}
                 for a in sorted(attempts, key=lambda a: a["attempt"])]  # fmt: skip
        for attempt in shown:
            attempt["completion"] = _cut(attempt["completion"])
        prompt = _cut(prompts.get(problem_id, ""))
        chosen.append({"problem_id": problem_id, "prompt": prompt, "attempts": shown})
        if len(chosen) == SHOWN_EPISODES:
            break
    return chosen


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " [...]"
