"""The "aligntune" preset: what the authors' released code computes, on the same token ids.

The paper's code is `CounterfactualGRPOTrainer` in the `aligntune` package (0.1.28): spans, answer
window and drops come from `compute_batched_counterfactual_importance`, weights from
`compute_soft_weights`. This module restates their rules on ccapo's objects (completion-relative
token indices) so that `ScoringConfig(preset="aligntune")` gives their spans, drops and weights;
tests/paper holds it to the real package. docs/method.md lists each rule, where it departs from the
paper's text, and which of the authors' accidents the preset keeps.

Everything here works on the completion's token ids and their one-token decodings ("pieces"), as
the authors' code does: their character positions are sums of piece lengths, never offsets into a
re-encoded text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ccapo.jobs import EngineJob
from ccapo.result import AnswerRegion
from ccapo.spans import TokenSpan
from ccapo.weights import WeightConfig, compute_token_weights

# The answer markers of the authors' scoring, in their order; the first occurrence of the first one
# found (case-insensitive) starts the answer window.
SCORING_MARKERS = ("final answer", "####", "\\boxed{")
# The markers of their weight mapping (case-sensitive, matched as token-id runs): no \boxed{ here,
# so a \boxed answer gets min_weight rather than answer_weight.
WEIGHT_MARKERS = ("Final Answer", "final answer", "####")
# Their formatting-only tokens (after stripping whitespace): importance x 0.1. No "*" in it.
FORMATTING = frozenset({"#", "##", "###", "####", "=", "==", "===", "====", "-", "--", "---"})
_LATEX_SHARE = 0.3  # of characters that are a backslash (ccapo's own segmenter counts words)

# Their arithmetic pattern: number (op number)+ = number, where whitespace (line breaks included)
# may surround each operator. Their operator class is written `[+\-×*/÷\\times\\div]`, a character
# class: it holds + - × * / ÷, the backslash and the single letters of "times" and "div" (t i m e s
# d v), never "x" and never the word \times. Restated here as that set of characters.
_NUM = r"\d+(?:\.\d+)?"
_OPERATOR_CHARS = "+\\-×*/÷\\\\timesdv"
_ARITHMETIC = re.compile(rf"{_NUM}(?:\s*[{_OPERATOR_CHARS}]\s*{_NUM})+\s*=\s*{_NUM}")


@dataclass(frozen=True)
class Span:
    start: int  # completion token indices, [start, end)
    end: int
    kind: str  # "calc" (their arithmetic spans) or "sentence"


@dataclass(frozen=True)
class Plan:
    """What the authors' code decides for one completion from its token ids alone, before any forward pass.

    `reasoning_end` is their answer-window start: the token holding the marker. The answer window
    scores tokens reasoning_end + 1 .. n - 1 (the marker token is conditioned on, not scored; end
    of turn and padding are scored). `scorable` is False where they skip the forward passes (no
    answer token after the marker, or no span) and give the reasoning a flat importance.
    """

    n_tokens: int
    reasoning_end: int
    marker: str | None
    spans: tuple[Span, ...]
    weight_answer_start: int | None  # compute_soft_weights' answer-marker token, or None
    pad_start: int | None  # the first end-of-sequence or pad token, or None
    formatting: tuple[bool, ...]

    @property
    def scorable(self) -> bool:
        return self.marker is not None and self.n_tokens - 1 - self.reasoning_end > 0 and bool(self.spans)

    def importance(self, drops: Sequence[float], base: float = 0.2) -> np.ndarray:
        """Their per-token importance (`compute_batched_counterfactual_importance`): base + drop / |span|
        on span tokens, min-max scaled over the reasoning into [0.5, 1]; 0 from the answer window on.
        Unscorable: 0.5 on the reasoning."""
        importance = np.full(self.n_tokens, base)
        if self.scorable:
            for span, drop in zip(self.spans, drops, strict=True):
                importance[span.start : span.end] += drop / (span.end - span.start)
        else:
            importance[:] = 0.5
        importance[self.reasoning_end :] = 0.0
        reasoning = importance[: self.reasoning_end]
        if reasoning.size:
            low, high = reasoning.min(), reasoning.max()
            importance[: self.reasoning_end] = 0.5 + 0.5 * (reasoning - low) / (high - low) if high > low else 0.5
        return importance

    def weights(self, drops: Sequence[float], config: WeightConfig, seed_key: int = 0) -> list[float]:
        """Per-token weights under `config`'s scheme.

        "paper": their counterfactual mode (the batched importance, then the soft weights).
        "inverted": their inverted mode, which inverts min-max over the whole completion (the zeros of
        the answer window included), so reasoning importance lands in [0, 0.5] and the window's in 1.
        "random": their random mode, importance ~ U(0, 1) on every completion token, seeded by
        (config.seed, seed_key). "normalized" and "uniform": ccapo's mappings over their drops and
        regions (reasoning [0, reasoning_end), the rest weight 1).
        """
        if config.scheme in ("normalized", "uniform"):
            spans = [(s.start, s.end, d) for s, d in zip(self.spans, drops, strict=True)] if self.scorable else []
            n, end = self.n_tokens, self.reasoning_end
            return compute_token_weights(n, end, end, spans, [""] * n, config, seed_key)
        if config.scheme == "random":
            rng = np.random.default_rng((config.seed % 2**64, seed_key % 2**64))
            importance = rng.uniform(0.0, 1.0, self.n_tokens)
        elif config.scheme == "inverted":
            importance = self._inverted_importance(drops, config.base_importance)
        else:
            importance = self.importance(drops, config.base_importance)
        return self._soft_weights(importance, config)

    def _inverted_importance(self, drops: Sequence[float], base: float) -> np.ndarray:
        """Their inverted mode runs the one-trace `compute_counterfactual_importance`, whose early
        returns differ from the batched path and are not inverted: no reasoning, base everywhere; no
        span, 1 on the reasoning and base after it; no answer token, 0 everywhere."""
        if self.reasoning_end <= 0:
            return np.full(self.n_tokens, base)
        if not self.spans:
            importance = np.full(self.n_tokens, base)
            importance[: self.reasoning_end] = 1.0
            return importance
        if not self.scorable:
            return np.zeros(self.n_tokens)
        importance = self.importance(drops, base)
        low, high = importance.min(), importance.max()
        if high <= low:
            return importance
        return low + (1.0 - (importance - low) / (high - low)) * (high - low)

    def _soft_weights(self, importance: np.ndarray, config: WeightConfig) -> list[float]:
        """Their `compute_soft_weights`, with `config`'s boost, min_weight, answer_weight, format factor
        and conservation."""
        importance = importance.copy()
        formatting = np.array(self.formatting, dtype=bool) & (importance > 0)
        importance[formatting] *= config.format_factor
        weights = config.min_weight + (config.boost - config.min_weight) * importance
        pad = self.pad_start
        if self.weight_answer_start is not None:
            weights[self.weight_answer_start : pad or self.n_tokens] = config.answer_weight
        if pad is not None:
            weights[pad:] = 1.0
        if config.conservation:
            kept = weights[:pad] if pad is not None else weights
            total = kept.sum()
            if kept.size and total > 0:
                kept *= kept.size / total
        return weights.tolist()


@dataclass(frozen=True)
class Prepared:
    """A trace under the preset: its plan, spans and answer window as ccapo reports them, and the engine
    job (None: no forward pass, see `reason`)."""

    plan: Plan
    spans: tuple[TokenSpan, ...]
    answer: AnswerRegion | None
    job: EngineJob | None
    reason: str | None


def prepare(
    tokenizer: Any,
    prompt_ids: list[int],
    completion_ids: list[int],
    completion: str,
    offsets: Sequence[tuple[int, int]],
    config: Any,
) -> Prepared:
    """The preset's engine job: the whole prompt + completion (end of turn and padding kept), the
    authors' spans masked with the pad id (else EOS), the answer scored from the token after the marker
    token to the end of the sequence."""
    p = plan(tokenizer, completion_ids, config)
    spans = tuple(
        TokenSpan(s.start, s.end, offsets[s.start][0], offsets[s.end - 1][1], s.kind) for s in p.spans
    )
    if p.marker is None:
        return Prepared(p, (), None, None, f"no answer marker ({', '.join(map(repr, SCORING_MARKERS))})")
    start = offsets[p.reasoning_end][0]
    answer = AnswerRegion(start, len(completion), p.reasoning_end, p.n_tokens, completion[start:], p.marker)
    if p.n_tokens - 1 - p.reasoning_end <= 0:
        return Prepared(p, (), answer, None, "no answer token after the marker token, which is not scored")
    offset = len(prompt_ids)
    job = EngineJob(
        ids=list(prompt_ids) + list(completion_ids),
        answer_start=offset + p.reasoning_end + 1,
        spans=[(offset + s.token_start, offset + s.token_end) for s in spans],
        intervention="pad",
        placeholder=mask_id(tokenizer),
        **config.estimator_settings(),
    )
    return Prepared(p, spans, answer, job, None)


def mask_id(tokenizer: Any) -> int:
    """Their mask: the pad id, else the end-of-sequence id."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def plan(tokenizer: Any, completion_ids: Sequence[int], config: Any) -> Plan:
    """The authors' decisions for `completion_ids` under `tokenizer` (`config`: a ScoringConfig)."""
    ids = list(completion_ids)
    pieces = [tokenizer.decode([t]) for t in ids]
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    pad_start = next((i for i, t in enumerate(ids) if t in ends), None)
    # Their code tests the pad position for truth, so a completion that starts with one counts as unpadded.
    content = ids[:pad_start] if pad_start else ids
    text = tokenizer.decode(content) if content else ""
    reasoning_end, marker = _answer_window(text, pieces[: len(content)], min(pad_start or len(ids), len(ids) - 1))
    pad_piece = tokenizer.decode([tokenizer.pad_token_id]) if tokenizer.pad_token_id else None
    spans = [
        s
        for s in detect_spans(pieces, pad_piece, config.max_spans, config.min_span_tokens, config.max_span_tokens)
        if s.end <= reasoning_end
    ]
    return Plan(
        n_tokens=len(ids),
        reasoning_end=reasoning_end,
        marker=marker,
        spans=tuple(spans),
        weight_answer_start=_weight_answer_start(tokenizer, ids, text),
        pad_start=pad_start,
        formatting=tuple(p.strip() in FORMATTING for p in pieces),
    )


def _answer_window(text: str, pieces: Sequence[str], default_end: int) -> tuple[int, str | None]:
    """The token holding the first occurrence of the first marker found, located by summing piece lengths.

    The marker is looked for in the lower-cased decoded text; if no piece covers its position (the
    pieces' lengths and the decoded text disagree), the window starts at `default_end`, as theirs does.
    """
    lowered = text.lower()
    for marker in SCORING_MARKERS:
        position = lowered.find(marker)
        if position < 0:
            continue
        cursor = 0
        for i, piece in enumerate(pieces):
            if cursor <= position < cursor + len(piece):
                return min(i, default_end), marker
            cursor += len(piece)
        return default_end, marker
    return default_end, None


def _weight_answer_start(tokenizer: Any, ids: list[int], text: str) -> int | None:
    """compute_soft_weights' answer start: the first run of a weight marker's own token ids, for the
    first marker (case-sensitive) that the decoded text contains and whose ids occur."""
    for marker in WEIGHT_MARKERS:
        if marker not in text:
            continue
        run = tokenizer.encode(marker, add_special_tokens=False)
        found = next((i for i in range(len(ids) - len(run) + 1) if ids[i : i + len(run)] == run), None)
        if found is not None:
            return found
    return None


def detect_spans(
    pieces: Sequence[str], pad_piece: str | None, max_spans: int, min_tokens: int, max_tokens: int
) -> list[Span]:
    """Their hybrid segmenter over the completion's pieces: arithmetic spans (at most max_spans // 2,
    the first ones), then sentences that overlap none; spans over `max_tokens` dropped, the first
    `max_spans` kept."""
    stop = _segmenter_stop(pieces, pad_piece)
    arithmetic = _arithmetic_spans(pieces, stop, max_spans // 2)
    sentences = [s for s in _sentence_spans(pieces, stop, max_spans, min_tokens) if not _overlaps_any(s, arithmetic)]
    kept: list[Span] = []
    for span in sorted(arithmetic + sentences, key=lambda s: s.start):
        if span.end - span.start <= max_tokens:
            kept.append(span)
        if len(kept) >= max_spans:
            break
    return kept


def _segmenter_stop(pieces: Sequence[str], pad_piece: str | None) -> int:
    """Where their segmenter stops: a pad piece, "Final"/"final" before "Answer"/"answer"/"answer:",
    or a piece that is "####" (\\boxed{ does not stop it: the sentence before it runs into the answer)."""
    for i, piece in enumerate(pieces):
        word = piece.strip()
        if pad_piece and piece == pad_piece:
            return i
        following = pieces[i + 1].strip() if i + 1 < len(pieces) else None
        if word in ("Final", "final") and following in ("Answer", "answer", "answer:"):
            return i
        if word == "####":
            return i
    return len(pieces)


def _latex_heavy(pieces: Sequence[str]) -> bool:
    text = "".join(pieces)
    return bool(text) and text.count("\\") / len(text) > _LATEX_SHARE


def _arithmetic_spans(pieces: Sequence[str], stop: int, limit: int) -> list[Span]:
    spans: list[Span] = []
    for match in _ARITHMETIC.finditer("".join(pieces[:stop])):
        start = end = None
        cursor = 0
        for i in range(stop):
            width = len(pieces[i])
            if start is None and cursor <= match.start() < cursor + width:
                start = i
            if cursor < match.end() <= cursor + width:
                end = i + 1
                break
            cursor += width
        if start is not None and end is not None:
            if _latex_heavy(pieces[start:end]):
                continue  # as theirs: a skipped span does not reach the limit check
            spans.append(Span(start, end, "calc"))
        # Checked after the append, so max_spans 1 (limit 0) still keeps the first span.
        if len(spans) >= limit:
            break
    return spans


def _sentence_spans(pieces: Sequence[str], stop: int, limit: int, min_tokens: int) -> list[Span]:
    """Sentences end at a piece that is ".", "!" or "?" once stripped, or one holding a blank line.

    A single line break never ends one (their test for a lone "\\n" compares a stripped piece, which
    cannot hold one), and the next sentence starts right after the ending piece, so it usually starts
    with the line break. After `limit` sentences the rest of the reasoning is one more candidate.
    """
    spans: list[Span] = []
    start = 0
    for i in range(stop):
        if not (pieces[i].strip() in {".", "!", "?"} or "\n\n" in pieces[i]):
            continue
        if i + 1 - start >= min_tokens and not _latex_heavy(pieces[start : i + 1]):
            spans.append(Span(start, i + 1, "sentence"))
        start = i + 1
        if len(spans) >= limit:
            break
    rest = pieces[start:stop]
    if start < stop and stop - start >= min_tokens and "".join(rest) and not _latex_heavy(rest):
        spans.append(Span(start, stop, "sentence"))
    return spans


def _overlaps_any(span: Span, others: Sequence[Span]) -> bool:
    return any(span.start < o.end and o.start < span.end for o in others)
