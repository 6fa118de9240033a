"""A trace made ready for the engine: what preparation yields (`PreparedTrace`), the error a bad trace
raises (`TraceError`), and the tokenizer helpers `Scorer.prepare` uses to get there."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from pydantic import ValidationError
from transformers import PreTrainedTokenizerBase

from ccapo import aligntune
from ccapo.jobs import EngineJob
from ccapo.result import AnswerRegion
from ccapo.spans import TokenSpan


class TraceError(ValueError):
    """A trace the caller must fix; names the trace's index in the batch."""

    def __init__(self, trace_index: int, message: str):
        super().__init__(f"trace {trace_index}: {message}")
        self.trace_index = trace_index
        self.detail = message


@dataclass(frozen=True)
class PreparedTrace:
    """A trace after tokenization and segmentation; `job` is None when it cannot be scored (see `reason`)."""

    completion: str
    tokens: list[str]
    answer: AnswerRegion | None = None
    spans: tuple[TokenSpan, ...] = ()
    job: EngineJob | None = None
    reason: str | None = None
    plan: aligntune.Plan | None = None  # the "aligntune" preset's decisions, which its weights need

    @property
    def counterfactuals(self) -> int:
        """Masked variants scoring this trace takes (0 when unscorable)."""
        return self.job.counterfactuals if self.job is not None else 0

    @property
    def feed_tokens(self) -> int:
        """Tokens the engine will feed for this trace: its cost, known before any model work."""
        return self.job.feed_tokens if self.job is not None else 0


def prompt_ids_of(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, Any]]) -> list[int]:
    """A text prompt or chat messages as the ids the model reads before the completion (its chat template
    with the generation prompt, when it has one)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if tokenizer.chat_template is None:
        text = "\n".join(str(m["content"]) for m in messages)
        return tokenizer(text).input_ids
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def decode_with_offsets(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The completion text of token ids and each token's character range in it."""
    if not ids:
        return "", []
    text = tokenizer.decode(ids)
    pieces = tokenizer.batch_decode([[i] for i in ids])
    if "".join(pieces) == text:
        ends = list(accumulate(len(piece) for piece in pieces))
    else:
        # A character split across tokens (byte-level BPE): a token ends where the decoded prefix
        # through it ends, not counting a half-decoded character, which the next token completes.
        ends = list(accumulate((len(tokenizer.decode(ids[: k + 1]).rstrip("\ufffd")) for k in range(len(ids))), max))
    offsets = list(zip([0, *ends[:-1]], ends, strict=True))
    return text, offsets


def content_end(ids: list[int], specials: set[int]) -> int:
    """Length of `ids` without its trailing special tokens (EOS, padding)."""
    end = len(ids)
    while end and ids[end - 1] in specials:
        end -= 1
    return end


def validation_message(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'trace'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors()
    )
