"""The hinted-guessing task (DESIGN section 2, "Synthetic learning task").

A hidden z in {0..N-1}; a visible hint h, uniform; z = h with probability ``hint_prob``, otherwise
uniform over the other N-1 values. Each attempt names a number; feedback says ``higher`` or
``lower``. Best possible V@5 for N = 32: 0.5 + 0.5 * 30/31 = 0.984 (try the hint, then binary search
the consistent range); binary search ignoring the hint 31/32 = 0.969; greedy "hint first, then
guess the middle of the other side" only 0.863. A learner that values informative failures finds
the search; one that chases immediate success learns "hint first" and stalls.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

from calgrpo.errors import ConfigError
from calgrpo.tasks.base import FeedbackMode, Problem, SyntheticTask, Verdict, register_task

_FIRST_INTEGER = re.compile(r"-?\d+")
NATURAL = {
    "prompt": "I picked a whole number from 0 to {top}. Hint: it is probably {hint}. Guess it: reply with "
    "just the number.",
    "higher": "Wrong: my number is higher. Guess again.",
    "lower": "Wrong: my number is lower. Guess again.",
    "wrong": "Wrong. Guess again.",
    "invalid": "Reply with just one number.",
    "give_up": " If you think you cannot find it, reply give up.",
    "locked": " This number is locked: no guess can win.",
    "locked_feedback": "Wrong: this number is locked. Guess again.",
}
"""The ``natural`` wording's texts (the problem's meta says which wording it was made with)."""
EXACT_OPTIMUM_MAX_VALUES = 64
"""Above this N, :meth:`GuessTask.best_v_at_k` skips the exact programme (O(N^4 K): minutes)."""
TERSE_GIVE_UP = "pass"
"""The terse wording's give-up answer: one word, so one token of a word-level tokenizer like every
number. A two-token answer ("give up") is almost never sampled by an untrained tiny model (about
1 in V^2), and once the numbers are learnt even less, so the cost-aware signal would never find it."""


@dataclass(frozen=True)
class GuessOptions:
    """The guess task's settings (``task_options`` of a run)."""

    num_values: int = 32
    """N: the hidden number and the hint are in 0..N-1."""
    hint_prob: float = 0.5
    """Probability that the hint is the hidden number."""
    give_up: bool = False
    """The model may give up (the prompt says so: answer ``pass`` in the terse wording, ``give up``
    in the natural one), ending the episode unsolved: what a cost-aware run (``--train.cost.*``)
    teaches it to do on hopeless problems."""
    locked: float = 0.0
    """Share of problems whose number is locked (needs give_up): the prompt says so, every guess is
    wrong (feedback ``locked``), so the best policy gives up on them at once; for the cost-aware
    benchmark, whose optimum is :meth:`GuessTask.optimal_objective`."""
    wording: str = "terse"
    """``terse`` (``guess 0 to 7 hint 3`` / ``higher``: what a tiny word-level tokenizer learns) or
    ``natural`` (sentences a pretrained chat model understands)."""

    def __post_init__(self) -> None:
        if self.wording not in ("terse", "natural"):
            raise ConfigError(f"guess task: wording must be terse or natural, got {self.wording!r}")
        if self.num_values < 2:
            raise ConfigError(f"guess task: num_values must be >= 2, got {self.num_values}")
        if not 0.0 <= self.hint_prob <= 1.0:
            raise ConfigError(f"guess task: hint_prob must be in [0, 1], got {self.hint_prob}")
        if not 0.0 <= self.locked < 1.0 or (self.locked > 0 and not self.give_up):
            message = f"guess task: locked must be in [0, 1) and needs give_up true, got {self.locked}"
            raise ConfigError(message)


@register_task
class GuessTask(SyntheticTask):
    """Guess a hidden integer with a noisy hint; feedback is higher/lower."""

    name = "guess"
    default_max_new_tokens = 2  # "<number> <|end|>"
    Options = GuessOptions

    @property
    def num_values(self) -> int:
        return self.options.num_values

    @property
    def hint_prob(self) -> float:
        return self.options.hint_prob

    def generate(self, num_problems: int, seed: int, id_prefix: str = "guess") -> list[Problem]:
        """``num_problems`` problems drawn with ``random.Random(seed)``; ids ``{id_prefix}-{i}``."""
        rng = random.Random(seed)
        problems = []
        for i in range(num_problems):
            hint = rng.randrange(self.num_values)
            if rng.random() < self.hint_prob:
                z = hint
            else:
                z = rng.randrange(self.num_values - 1)
                z += z >= hint  # uniform over the values other than the hint
            meta = {"num_values": self.num_values, "hint": hint, "hint_prob": self.hint_prob}
            prompt = f"guess 0 to {self.num_values - 1} hint {hint}"
            if self.options.wording == "natural":
                prompt = NATURAL["prompt"].format(top=self.num_values - 1, hint=hint)
                meta["wording"] = "natural"
            if self.options.locked and rng.random() < self.options.locked:
                prompt += NATURAL["locked"] if self.options.wording == "natural" else " locked"
                meta["locked"] = True
            if self.options.give_up:
                prompt += NATURAL["give_up"] if self.options.wording == "natural" else f" or {TERSE_GIVE_UP}"
                meta["give_up"] = True
            problems.append(Problem(id=f"{id_prefix}-{i:06d}", task=self.name, prompt=prompt, answer=str(z),
                                    meta=meta))  # fmt: skip
        return problems

    def verify(self, problem: Problem, completion: str) -> Verdict:
        match = _FIRST_INTEGER.search(completion)
        if match is None:
            return Verdict(False, "invalid")
        if problem.meta.get("locked") is True:
            return Verdict(False, "locked")
        guess, z = int(match.group()), int(problem.answer)
        if guess == z:
            return Verdict(True, "correct")
        return Verdict(False, "higher" if z > guess else "lower")

    def give_up_answer(self, problem: Problem) -> str | None:
        if problem.meta.get("give_up") is not True:
            return None
        return "give up" if problem.meta.get("wording") == "natural" else TERSE_GIVE_UP

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if problem.meta.get("wording") == "natural":
            if verdict.detail in ("invalid", "locked"):
                return NATURAL["invalid" if verdict.detail == "invalid" else "locked_feedback"]
            return (
                NATURAL[verdict.detail]
                if mode == "detailed" and verdict.detail in NATURAL
                else NATURAL["wrong"]
            )
        if verdict.detail == "locked":
            return "locked"
        if mode == "binary" or verdict.detail not in ("higher", "lower"):
            return "wrong . say one number" if verdict.detail == "invalid" else "wrong"
        return verdict.detail

    def sample_texts(self, problems: list[Problem]) -> list[str]:
        texts = [self.format_prompt(p) for p in problems]
        texts += ["higher", "lower", "wrong", "wrong . say one number"]
        if self.options.give_up:  # only then: a tiny model's vocabulary, and its numbers, stay as they were
            texts += [TERSE_GIVE_UP, "locked"]
        if self.options.wording == "natural":
            texts += [text for key, text in NATURAL.items() if key != "prompt"]
        texts.append(" ".join(str(v) for v in range(self.num_values)))  # every number is one token
        return texts

    def optimal_v_at_k(self, num_attempts: int) -> float:
        """The best achievable V@K of any policy (dynamic programming over consistent intervals)."""
        return self.optimal_curve(num_attempts)[-1]

    def optimal_curve(self, num_attempts: int) -> list[float]:
        """The best achievable V@1..V@K (one programme for every k: its table serves them all).
        O(N^4 K) steps in Python: 0.4 s for N = 32, K = 5; 6 s for 64; a minute for 128."""
        n, p = self.num_values, self.hint_prob
        other = (1.0 - p) / (n - 1)
        totals = [0.0] * num_attempts

        for hint in range(n):

            @cache
            def captured(low: int, high: int, attempts: int) -> float:
                # Prior mass of z in [low, high] that an optimal searcher finds with `attempts` guesses.
                if attempts == 0 or low > high:
                    return 0.0
                return max(
                    (p if guess == hint else other)  # noqa: B023 (the cache dies with this hint's loop)
                    + captured(low, guess - 1, attempts - 1)
                    + captured(guess + 1, high, attempts - 1)
                    for guess in range(low, high + 1)
                )

            for k in range(1, num_attempts + 1):
                totals[k - 1] += captured(0, n - 1, k)
        return [(1.0 - self.options.locked) * total / n for total in totals]  # locked: never

    def best_v_at_k(self, num_attempts: int) -> list[float] | None:
        """:meth:`optimal_curve` where it is quick (N <= 64, a few seconds), else None: what a run
        prints beside its model, so a large N never stalls the end of a run."""
        return self.optimal_curve(num_attempts) if self.num_values <= EXACT_OPTIMUM_MAX_VALUES else None

    def optimal_objective(self, num_attempts: int, cost_per_attempt: float) -> float:
        """The best achievable J = V@K - cost x E[attempts] of any policy that may give up (one attempt,
        its own cost) or stop guessing only by giving up: dynamic programming over consistent intervals;
        a locked problem's best is to give up at once (-cost)."""
        n, p, c = self.num_values, self.hint_prob, cost_per_attempt
        other = (1.0 - p) / (n - 1)

        def best_for_hint(hint: int) -> float:
            def mass(low: int, high: int) -> float:
                if low > high:
                    return 0.0
                return (high - low + 1) * other + (p - other) * (low <= hint <= high)

            @cache
            def value(low: int, high: int, attempts: int) -> float:
                # Expected (success - cost) over the prior mass of z in [low, high], unnormalised.
                weight = mass(low, high)
                if attempts == 0 or weight == 0.0:
                    return 0.0
                guesses = (
                    (p if guess == hint else other) - c * weight
                    + value(low, guess - 1, attempts - 1) + value(guess + 1, high, attempts - 1)
                    for guess in range(low, high + 1)
                )  # fmt: skip
                return max(-c * weight, *guesses)

            return value(0, n - 1, num_attempts)

        solvable = sum(best_for_hint(h) for h in range(n)) / n
        return (1.0 - self.options.locked) * solvable - self.options.locked * c
