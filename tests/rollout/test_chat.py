"""The chat layout appends exactly the tokens the template would render for the whole conversation."""

from __future__ import annotations

import pytest

from calgrpo.rollout.chat import ChatLayout


@pytest.mark.parametrize("stopped", [True, False])
def test_layout_pieces_concatenate_to_the_rendered_conversation(tiny_policy, stopped: bool) -> None:
    tokenizer = tiny_policy.tokenizer
    layout = ChatLayout(tokenizer)
    end = tokenizer.eos_token_id
    attempts = [
        tokenizer("3", add_special_tokens=False)["input_ids"],
        tokenizer("5", add_special_tokens=False)["input_ids"],
    ]
    if stopped:
        attempts = [a + [end] for a in attempts]
    ids = layout.prompt_ids("guess 0 to 7 hint 3")
    ids += attempts[0] + layout.feedback_ids("higher", attempts[0])
    ids += attempts[1] + layout.feedback_ids("lower", attempts[1])
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "guess 0 to 7 hint 3"},
            {"role": "assistant", "content": "3"},
            {"role": "user", "content": "higher"},
            {"role": "assistant", "content": "5"},
            {"role": "user", "content": "lower"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_layout_with_system_prompt(tiny_policy) -> None:
    layout = ChatLayout(tiny_policy.tokenizer, system_prompt="hint")
    tokens = tiny_policy.tokenizer.convert_ids_to_tokens(layout.prompt_ids("3"))
    assert tokens[:2] == ["<|system|>", "hint"]
    assert layout.stop_token_ids == [tiny_policy.tokenizer.eos_token_id]
