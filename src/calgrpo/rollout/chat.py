"""Token layout of a multi-attempt conversation through the model's own chat template.

The conversation is ``user: prompt, assistant: attempt 1, user: feedback 1, assistant: attempt 2, ...``.
Generated attempt tokens are kept exactly as sampled (re-tokenising decoded text can change them);
only the glue around them is rendered from the template: the prompt with the generation prompt,
and after each failed attempt the rest of the assistant turn's end marker, the feedback turn and a
new generation prompt. Sentinel messages find those pieces once, so any template that renders
messages in order works (Llama 3, Qwen2 and the tiny models' template among them).
"""

from __future__ import annotations

from calgrpo.errors import InvalidInputError

_PROMPT_SENTINEL = "CALGRPOPROMPTSENTINEL"
_ANSWER_SENTINEL = "CALGRPOANSWERSENTINEL"
_FEEDBACK_SENTINEL = "CALGRPOFEEDBACKSENTINEL"


class ChatLayout:
    """Turns prompts and feedback into the token ids appended to a conversation."""

    def __init__(self, tokenizer, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        if tokenizer.eos_token_id is None:
            raise InvalidInputError("the tokenizer has no eos token; attempts need a stop token")
        self.stop_token_ids = [tokenizer.eos_token_id]
        self._feedback_cache: dict[tuple[str, bool], list[int]] = {}
        first = [*self.system, {"role": "user", "content": _PROMPT_SENTINEL}]
        answered = self._render([*first, {"role": "assistant", "content": _ANSWER_SENTINEL}], False)
        followed = self._render(
            [
                *first,
                {"role": "assistant", "content": _ANSWER_SENTINEL},
                {"role": "user", "content": _FEEDBACK_SENTINEL},
            ],
            True,
        )
        if not followed.startswith(answered):
            raise InvalidInputError(
                "the chat template re-renders earlier turns differently; cannot append turns"
            )
        self.turn_end = answered[answered.rindex(_ANSWER_SENTINEL) + len(_ANSWER_SENTINEL) :]
        self.feedback_before, _, self.feedback_after = followed[len(answered) :].partition(_FEEDBACK_SENTINEL)
        stop_text = tokenizer.decode(self.stop_token_ids)
        # What still has to follow a completion that stopped on its own stop token.
        self.turn_end_after_stop = self.turn_end.lstrip()
        if self.turn_end_after_stop.startswith(stop_text):
            self.turn_end_after_stop = self.turn_end_after_stop[len(stop_text) :]

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def prompt_ids(self, prompt: str) -> list[int]:
        """Tokens of the first user turn plus the generation prompt."""
        messages = [*self.system, {"role": "user", "content": prompt}]
        return self._encode(self._render(messages, True))

    def feedback_ids(self, feedback: str, completion_ids: list[int]) -> list[int]:
        """Tokens appended after an attempt: close its turn, the feedback turn, a new generation prompt."""
        stopped = bool(completion_ids) and completion_ids[-1] in self.stop_token_ids
        key = (feedback, stopped)
        if key not in self._feedback_cache:  # feedback texts repeat a lot ("higher", "Incorrect. ...")
            if len(self._feedback_cache) > 4096:
                self._feedback_cache.clear()
            turn_end = self.turn_end_after_stop if stopped else self.turn_end
            self._feedback_cache[key] = self._encode(
                turn_end + self.feedback_before + feedback + self.feedback_after
            )
        return list(self._feedback_cache[key])
