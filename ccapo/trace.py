"""A reasoning trace to score: a prompt and a completion, as text or as token ids."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

ChatMessage = dict[str, Any]


def _integer(value: Any) -> int:
    """An integer as given (numpy and torch integers included); "12", true or 1.0 are a caller's mistake."""
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, not the boolean {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"must be an integer, not {type(value).__name__} {value!r}") from None


StrictInt = Annotated[int, BeforeValidator(_integer)]


class Trace(BaseModel):
    """One prompt and its completion (reasoning, then an answer).

    Give text (`prompt` and `completion`) or token ids (`prompt_ids` and `completion_ids`), not both.
    A string prompt is the user message, rendered with the model's chat template and generation
    prompt; a list of chat messages is rendered as given. Token-id traces are used verbatim.
    `spans` are caller-given ranges of the completion to probe: character ranges for text traces,
    completion-token ranges for token-id traces. `reference_answer` is only used when the scoring
    config asks for target="reference".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | list[ChatMessage] | None = None
    completion: str | None = None
    prompt_ids: list[StrictInt] | None = None
    completion_ids: list[StrictInt] | None = None
    reference_answer: str | None = None
    spans: list[tuple[StrictInt, StrictInt]] | None = Field(
        None,
        description=(
            "[start, end) ranges to probe: characters (text traces) or completion tokens (id traces). Character "
            "ranges must be disjoint; a token straddling two of them belongs to the one holding its first "
            "non-whitespace character, else its first character."
        ),
    )

    @model_validator(mode="after")
    def _one_form(self) -> Trace:
        has_text = self.prompt is not None or self.completion is not None
        has_ids = self.prompt_ids is not None or self.completion_ids is not None
        if has_text and has_ids:
            raise ValueError("give either prompt/completion text or prompt_ids/completion_ids, not both")
        if has_ids and (self.prompt_ids is None or self.completion_ids is None):
            raise ValueError("a token-id trace needs both prompt_ids and completion_ids")
        if not has_ids and (self.prompt is None or self.completion is None):
            raise ValueError("a text trace needs both prompt and completion")
        if has_ids and not self.prompt_ids:
            raise ValueError("prompt_ids is empty: the model needs at least one prompt token to condition on")
        if isinstance(self.prompt, list) and not (
            self.prompt
            and all(isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in self.prompt)
        ):
            raise ValueError('a chat prompt is a non-empty list of {"role": str, "content": str} messages')
        return self

    @property
    def is_tokenized(self) -> bool:
        return self.prompt_ids is not None
