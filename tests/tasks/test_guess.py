"""The guess task: generator, verifier, feedback, problem rows, registry."""

from __future__ import annotations

import pytest

from calgrpo.errors import ConfigError, UnknownNameError
from calgrpo.tasks import TASKS, Problem, Verdict, get_task


def test_guess_generate_is_seeded_and_follows_the_hint_law() -> None:
    task = get_task("guess", num_values=32, hint_prob=0.5)
    first, again, other = (
        task.generate(4000, seed=3),
        task.generate(4000, seed=3),
        task.generate(4000, seed=4),
    )
    assert first == again
    assert first != other
    hits = sum(p.answer == str(p.meta["hint"]) for p in first)
    assert abs(hits / 4000 - 0.5) < 0.03  # z = hint with probability hint_prob, never otherwise by chance
    answers = {int(p.answer) for p in first}
    assert answers == set(range(32))
    assert len({p.id for p in first}) == 4000


def test_guess_hint_prob_zero_never_uses_the_hint() -> None:
    problems = get_task("guess", num_values=4, hint_prob=0.0).generate(500, seed=0)
    assert all(p.answer != str(p.meta["hint"]) for p in problems)


@pytest.mark.parametrize(
    ("completion", "correct", "detail"),
    [
        ("7", True, "correct"),
        ("3", False, "higher"),
        ("12 13", False, "lower"),
        ("to hint", False, "invalid"),
        ("", False, "invalid"),
        (" 7 ", True, "correct"),
    ],
)
def test_guess_verify(completion: str, correct: bool, detail: str) -> None:
    task = get_task("guess", num_values=16)
    problem = Problem(id="p", task="guess", prompt="", answer="7", meta={"hint": 3})
    assert task.verify(problem, completion) == Verdict(correct, detail)


def test_guess_feedback_modes_never_reveal_the_answer() -> None:
    task = get_task("guess", num_values=16)
    problem = Problem(id="p", task="guess", prompt="", answer="7")
    assert task.feedback(problem, Verdict(False, "higher")) == "higher"
    assert task.feedback(problem, Verdict(False, "lower"), mode="binary") == "wrong"
    assert "number" in task.feedback(problem, Verdict(False, "invalid"))
    for detail in ("higher", "lower", "invalid"):
        assert "7" not in task.feedback(problem, Verdict(False, detail))


def test_guess_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="num_values"):
        get_task("guess", num_values=1)
    with pytest.raises(ConfigError, match="hint_prob"):
        get_task("guess", hint_prob=1.5)


def test_task_registry_lists_choices() -> None:
    assert "guess" in TASKS
    with pytest.raises(UnknownNameError, match="valid names: code, codebreak, gsm8k, guess, math. Did you mean .guess."):
        get_task("gues")


def test_problem_row_roundtrip() -> None:
    problem = get_task("guess").generate(1, seed=0)[0]
    assert Problem.from_row(problem.to_row()) == problem


def test_guess_optimum_matches_the_design_numbers() -> None:
    assert get_task("guess", num_values=32).optimal_v_at_k(5) == pytest.approx(0.5 + 0.5 * 30 / 31)
    # With a useless hint the best is plain binary search: 2^5 - 1 = 31 of 32 values.
    assert get_task("guess", num_values=32, hint_prob=1 / 32).optimal_v_at_k(5) == pytest.approx(31 / 32)
    assert get_task("guess", num_values=4).optimal_v_at_k(1) == pytest.approx(0.5)
    # One programme gives every k: with a useless hint, plain binary search finds 2^k - 1 of 32 values.
    curve = get_task("guess", num_values=32, hint_prob=1 / 32).optimal_curve(5)
    assert curve == pytest.approx([(2**k - 1) / 32 for k in range(1, 6)])
    # What a run prints is skipped where the programme would take minutes (N = 1000: never ends).
    assert get_task("guess", num_values=1000).best_v_at_k(5) is None
    # N = 8: the hint; then one value on whichever side the feedback names (a value per side, two in
    # all, 0.5 / 7 each); the hint and three halvings cover all 8.
    best = get_task("guess", num_values=8).best_v_at_k(4)
    assert best[0] == pytest.approx(0.5) and best[1] == pytest.approx(0.5 + 2 * 0.5 / 7)
    assert best[3] == pytest.approx(1.0)


def test_natural_wording_for_pretrained_models() -> None:
    from calgrpo.tasks import synthetic_task

    task = synthetic_task("guess", {"num_values": "8", "wording": "natural"})
    problem = task.generate(1, seed=0)[0]
    terse = synthetic_task("guess", {"num_values": "8"}).generate(1, seed=0)[0]
    assert problem.answer == terse.answer and problem.meta["hint"] == terse.meta["hint"]  # the same draw
    assert problem.prompt.startswith("I picked a whole number from 0 to 7. Hint: it is probably")
    wrong = str((int(problem.answer) + 1) % 8)
    verdict = task.verify(problem, f"My guess is {wrong}.")
    # Any task instance gives the problem's own wording: the problem carries it.
    assert get_task("guess").feedback(problem, verdict).startswith("Wrong: my number is")
    assert get_task("guess").feedback(problem, verdict, mode="binary") == "Wrong. Guess again."
    assert problem.answer not in get_task("guess").feedback(problem, verdict)
    with pytest.raises(ConfigError, match="wording must be terse or natural"):
        synthetic_task("guess", {"wording": "poetic"})


def test_locked_problems_cannot_be_won_and_the_cost_aware_optimum_by_hand() -> None:
    from calgrpo.tasks import verify_batch

    task = get_task("guess", num_values=8, give_up=True, locked=0.5)
    problems = task.generate(40, seed=0)
    locked = [p for p in problems if p.meta.get("locked")]
    assert 10 < len(locked) < 30 and all(p.prompt.endswith("locked or pass") for p in locked)
    verdicts = verify_batch({"guess": task}, locked[:1] * 2, [locked[0].answer, "pass"])
    assert [v.detail for v in verdicts] == ["locked", "gave_up"] and not verdicts[0].correct
    assert task.feedback(locked[0], verdicts[0]) == "locked"
    with pytest.raises(ConfigError, match="needs give_up"):
        get_task("guess", locked=0.5)
    # N = 2, p = 0.5: guess the hint (0.5 - c), then the other number (0.5 - c x 0.5): 0.85 at c = 0.1;
    # half the problems locked: give up at once, -c.
    assert get_task("guess", num_values=2, give_up=True).optimal_objective(2, 0.1) == pytest.approx(0.85)
    assert get_task("guess", num_values=2, give_up=True).optimal_objective(1, 0.1) == pytest.approx(0.4)
    half = get_task("guess", num_values=2, give_up=True, locked=0.5)
    assert half.optimal_objective(2, 0.1) == pytest.approx(0.5 * 0.85 - 0.5 * 0.1)
    assert half.optimal_objective(2, 0.0) == pytest.approx(half.optimal_v_at_k(2)) == pytest.approx(0.5)
    # Giving up costs an attempt too, so on a winnable problem the first attempt is a guess of the hint.
    assert get_task("guess", num_values=8, give_up=True).optimal_objective(1, 0.9) == pytest.approx(0.5 - 0.9)
