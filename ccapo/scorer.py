"""`Scorer`: traces in, span drops and token weights out.

Preparing a trace (tokenizing, locating the answer, segmenting) happens here, with the tokenizer
helpers and the prepared trace of `prepared.py`; the forward passes happen in `engine.py`. Every
trace is validated before any model work starts, so a bad trace raises at once and no computation
is lost; a trace that merely cannot be scored (no answer marker,
empty completion) comes back "unscorable" with uniform weights and never fails its neighbours.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from pydantic import ValidationError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo import aligntune
from ccapo.answer import MARKERS, find_answer, reference_answer_text
from ccapo.config import MAX_SPANS, ScoringConfig
from ccapo.engine import Engine
from ccapo.gradient import unsupported_reason as gradient_unsupported
from ccapo.horizon import horizon_unsupported
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress, never_cancelled
from ccapo.models import DEFAULT_MODEL, load_model
from ccapo.prepared import (
    PreparedTrace,
    TraceError,
    content_end,
    decode_with_offsets,
    prompt_ids_of,
    validation_message,
)
from ccapo.reference import reference_score
from ccapo.result import AnswerRegion, SpanImportance, TraceImportance
from ccapo.routing import estimate
from ccapo.spans import char_range_to_tokens, custom_spans, segment
from ccapo.trace import Trace
from ccapo.weights import WeightConfig, compute_token_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    traces: int
    counterfactuals: int
    forward_tokens: int
    compute_ms: float


@dataclass(frozen=True)
class ScoredBatch:
    results: list[TraceImportance]
    usage: Usage


class Scorer:
    """Counterfactual span importance for reasoning traces, under one causal LM.

    `max_batch_tokens` bounds the tokens per forward pass (default 4096 on CPU, 32768 otherwise);
    `memory_bytes` fixes the exact engine's memory budget (default: half the memory free when a
    call starts, see `ccapo.memory`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_tokens: int | None = None,
        model_id: str | None = None,
        memory_bytes: int | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or type(model).__name__
        default_budget = 4096 if model.device.type == "cpu" else 32768
        self.engine = Engine(model, max_batch_tokens or default_budget, memory_bytes=memory_bytes)
        self.vocab_size = model.get_input_embeddings().num_embeddings
        text_config = model.config.get_text_config()
        self.context_length = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 30)
        self._exact_fast_path = _fast_path_supported(text_config)
        if not self._exact_fast_path:
            logger.warning("%s uses sliding-window attention: scoring with the reference engine", self.model_id)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        trust_remote_code: bool = False,
        max_batch_tokens: int | None = None,
        memory_bytes: int | None = None,
    ) -> Scorer:
        """Load a model by hub id, local directory or GGUF file (default: the bundled SmolLM2-135M)."""
        loaded, tokenizer = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        model_id = DEFAULT_MODEL if model in (None, "default") else model  # "default" names no model
        return cls(loaded, tokenizer, max_batch_tokens=max_batch_tokens, model_id=model_id, memory_bytes=memory_bytes)

    def score(
        self,
        traces: Sequence[Trace | Mapping[str, Any]],
        config: ScoringConfig | Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> list[TraceImportance]:
        """Score traces; results align with `traces`. Raises `TraceError` (a ValueError) on bad input."""
        return self.score_batch(traces, config, progress).results

    def score_batch(
        self,
        traces: Sequence[Trace | Mapping[str, Any]],
        config: ScoringConfig | Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> ScoredBatch:
        """`score`, plus what it cost."""
        config = _as_config(config)
        prepared = self.prepare(traces, config)
        jobs = [p.job for p in prepared if p.job is not None]
        started = time.perf_counter()
        scores = self.compute(jobs, progress)
        compute_ms = (time.perf_counter() - started) * 1000
        by_job = iter(scores)
        results = [self.result(p, next(by_job) if p.job else None, config) for p in prepared]
        usage = Usage(
            traces=len(prepared),
            counterfactuals=sum(len(job.spans) for job in jobs),
            forward_tokens=sum(s.forward_tokens for s in scores),
            compute_ms=compute_ms,
        )
        return ScoredBatch(results, usage)

    def prepare(
        self, traces: Sequence[Trace | Mapping[str, Any]], config: ScoringConfig | Mapping[str, Any] | None = None
    ) -> list[PreparedTrace]:
        """Tokenize, locate answers and segment, without model work; raises `TraceError` on bad input.

        `score` is `prepare`, then the engine on each prepared `job`, then `result`; a server or a
        trainer that batches the engine work itself calls the three steps on its own.
        """
        config = _as_config(config)
        placeholder = self.placeholder_id(config.placeholder)
        prepared = []
        for index, trace in enumerate(traces):
            try:
                prepared.append(self._prepare(index, trace, config, placeholder))
            except TraceError:
                raise
            except Exception as err:  # the tokenizer or chat template choked on this trace's input
                raise TraceError(index, f"could not be tokenized ({type(err).__name__}: {err})") from err
        return prepared

    def compute(self, jobs: Sequence[EngineJob], progress: Progress | None = None) -> list[JobScores]:
        """Run prepared jobs, each by its estimator; exact ones on the fast engine, or on the reference
        where the fast path is not exact."""
        return cast(list[JobScores], estimate(self.model, self._exact, jobs, never_cancelled, progress))

    def compute_cancellable(self, jobs: Sequence[EngineJob], cancelled: Cancelled) -> list[JobScores | None]:
        """`compute`, dropping job i (its entry None) once `cancelled(i)` says so.

        The fast engine asks before every forward pass; the reference engine before every job.
        A server uses this to stop work whose request is gone.
        """
        return estimate(self.model, self._exact, jobs, cancelled)

    def _exact(
        self, jobs: Sequence[EngineJob], cancelled: Cancelled, progress: Progress | None = None
    ) -> list[JobScores | None]:
        if self._exact_fast_path:
            return self.engine.score_cancellable(jobs, cancelled, progress)
        results: list[JobScores | None] = []
        for i, job in enumerate(jobs):
            results.append(None if cancelled(i) else reference_score(self.model, [job])[0])
            if progress is not None:
                progress(i + 1, len(jobs))
        return results

    def placeholder_id(self, placeholder: int | str | None = None) -> int:
        """The "pad" intervention's replacement token.

        Default: the tokenizer's pad token when it is a dedicated one, else the single-space token;
        never EOS, BOS or an end-of-turn token, which make the model read the reply as over.
        """
        if isinstance(placeholder, int):
            if not 0 <= placeholder < self.vocab_size:
                raise ValueError(f"placeholder id {placeholder} is outside the vocabulary (size {self.vocab_size})")
            return placeholder
        if placeholder is None:
            pad = self.tokenizer.pad_token_id
            reserved = {self.tokenizer.eos_token_id, self.tokenizer.bos_token_id, self.tokenizer.unk_token_id}
            name = (self.tokenizer.pad_token or "").lower()
            if pad is not None and pad not in reserved and "end" not in name and "eot" not in name:
                return pad
            placeholder = " "
        ids = self.tokenizer(placeholder, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(
                f"placeholder {placeholder!r} encodes to {len(ids)} tokens; give one that is a single token"
            )
        return ids[0]

    # -- preparing traces ---------------------------------------------------------------------

    def _prepare(
        self, index: int, trace: Trace | Mapping[str, Any], config: ScoringConfig, placeholder: int
    ) -> PreparedTrace:
        if not isinstance(trace, Trace):
            try:
                trace = Trace.model_validate(trace)
            except ValidationError as err:
                raise TraceError(index, validation_message(err)) from None
        if trace.is_tokenized:
            prompt_ids = list(trace.prompt_ids)
            completion_ids = list(trace.completion_ids)
            self._check_vocab(index, prompt_ids, "prompt_ids")
            self._check_vocab(index, completion_ids, "completion_ids")
            completion, offsets = decode_with_offsets(self.tokenizer, completion_ids)
        else:
            prompt_ids = prompt_ids_of(self.tokenizer, trace.prompt)
            completion = trace.completion
            encoded = self.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
            completion_ids, offsets = encoded.input_ids, [tuple(o) for o in encoded.offset_mapping]
        self._check_length(index, len(prompt_ids) + len(completion_ids), "prompt + completion")
        tokens = self.tokenizer.batch_decode([[i] for i in completion_ids])
        if config.target == "reference" and trace.reference_answer is None:
            raise TraceError(index, 'target="reference" needs a reference_answer on every trace')
        if config.segmenter == "custom" and trace.spans is None:
            raise TraceError(index, 'segmenter="custom" needs spans on every trace')
        if not completion_ids:
            return PreparedTrace(completion, tokens, reason="the completion is empty")
        if config.preset is not None:
            if trace.spans is not None:
                raise TraceError(index, f"preset {config.preset!r} segments by the authors' rule: remove the spans")
            pre = aligntune.prepare(self.tokenizer, prompt_ids, completion_ids, completion, offsets, config)
            return PreparedTrace(completion, tokens, pre.answer, pre.spans, pre.job, pre.reason, pre.plan)

        location = find_answer(completion, self.tokenizer.all_special_tokens)
        if location is not None:
            token_start, token_end = char_range_to_tokens(offsets, location.start, location.end)
        if config.target == "completion":
            if location is None:
                markers = ", ".join(repr(m) for m in MARKERS)
                return PreparedTrace(completion, tokens, reason=f"no answer marker ({markers}) with an answer after it")
            answer_ids = completion_ids[token_start:token_end]
            answer_text = completion[location.start : location.end]
        else:
            answer_text = reference_answer_text(completion, location, trace.reference_answer)
            answer_ids = self.tokenizer(answer_text, add_special_tokens=False).input_ids
            if location is None:  # no marker: the whole completion is reasoning, the answer is appended
                token_start = token_end = content_end(completion_ids, set(self.tokenizer.all_special_ids))
        if token_start == 0:
            return PreparedTrace(completion, tokens, reason="the completion has no reasoning before its answer")
        answer = AnswerRegion(
            start=location.start if location else len(completion),
            end=location.end if location else len(completion),
            token_start=token_start,
            token_end=token_end,
            text=answer_text,
            marker=location.marker if location else "####",
        )

        if trace.spans is not None and len(trace.spans) > MAX_SPANS:
            raise TraceError(
                index, f"{len(trace.spans)} custom spans, over the limit of {MAX_SPANS}: each costs a forward pass row"
            )
        try:
            if trace.spans is not None:
                spans = custom_spans(completion, offsets, token_start, trace.spans, by_tokens=trace.is_tokenized)
            else:
                spans = segment(
                    completion,
                    offsets,
                    token_start,
                    config.segmenter,
                    max_spans=config.max_spans,
                    min_span_tokens=config.min_span_tokens,
                    max_span_tokens=config.max_span_tokens,
                    window_tokens=config.window_tokens,
                )
        except ValueError as err:
            raise TraceError(index, str(err)) from None

        ids = prompt_ids + completion_ids[:token_start] + answer_ids
        self._check_length(index, len(ids), "the scored sequence")
        offset = len(prompt_ids)
        job = EngineJob(
            ids=ids,
            answer_start=offset + token_start,
            spans=[(offset + s.token_start, offset + s.token_end) for s in spans],
            intervention=config.intervention,
            placeholder=placeholder,
            **config.estimator_settings(),
        )
        if config.estimator == "gradient" and (reason := gradient_unsupported(self.model, job)) is not None:
            raise TraceError(index, reason)
        if config.estimator == "horizon" and (reason := horizon_unsupported(self.model)) is not None:
            raise TraceError(index, reason)
        return PreparedTrace(completion, tokens, answer, tuple(spans), job)

    def _check_vocab(self, index: int, ids: list[int], field: str) -> None:
        bad = next(((k, t) for k, t in enumerate(ids) if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise TraceError(
                index, f"{field}[{bad[0]}] = {bad[1]} is outside the model's vocabulary (ids 0..{self.vocab_size - 1})"
            )

    def _check_length(self, index: int, length: int, what: str) -> None:
        if length > self.context_length:
            raise TraceError(
                index,
                f"{what} is {length} tokens, longer than the model's context of {self.context_length}; shorten it",
            )

    # -- results ------------------------------------------------------------------------------

    def result(self, prepared: PreparedTrace, scores: JobScores | None, config: ScoringConfig) -> TraceImportance:
        """The `TraceImportance` of a prepared trace from its engine scores (None: unscorable)."""
        plan, seed_key = prepared.plan, zlib.crc32(prepared.completion.encode())
        if scores is None:
            return TraceImportance(
                status="unscorable",
                completion=prepared.completion,
                tokens=prepared.tokens,
                token_weights=plan.weights([], config.weights, seed_key) if plan else [1.0] * len(prepared.tokens),
                reason=prepared.reason,
                target=config.target,
            )
        spans = [
            SpanImportance(
                start=s.start,
                end=s.end,
                token_start=s.token_start,
                token_end=s.token_end,
                text=prepared.completion[s.start : s.end],
                kind=s.kind,
                masked_logprob=masked,
                drop=scores.base_logprob - masked,
                exact=exact,
            )
            for s, masked, exact in zip(
                prepared.spans, scores.masked_logprobs, scores.exact or [True] * len(prepared.spans), strict=True
            )
        ]
        result = TraceImportance(
            status="ok",
            completion=prepared.completion,
            tokens=prepared.tokens,
            token_weights=[],
            base_logprob=scores.base_logprob,
            spans=spans,
            answer=prepared.answer,
            target=config.target,
        )
        drops = [s.drop for s in spans]
        weights = plan.weights(drops, config.weights, seed_key) if plan else token_weights(result, config.weights)
        result.token_weights = weights
        return result


def token_weights(importance: TraceImportance, config: WeightConfig | Mapping[str, Any] | None = None) -> list[float]:
    """Per-token weights of a scored trace under a weight config, without re-scoring.

    Unscorable traces get uniform weights. The "random" scheme is seeded by the config's seed and
    the completion text, so the same trace always gets the same weights.
    """
    config = config if isinstance(config, WeightConfig) else WeightConfig.model_validate(config or {})
    answer = importance.answer
    if importance.status != "ok" or answer is None:
        return [1.0] * len(importance.tokens)
    return compute_token_weights(
        n_tokens=len(importance.tokens),
        reasoning_end=answer.token_start,
        answer_end=answer.token_end,
        spans=[(s.token_start, s.token_end, s.drop) for s in importance.spans],
        tokens=importance.tokens,
        config=config,
        seed_key=zlib.crc32(importance.completion.encode()),
        calculations=[(s.token_start, s.token_end) for s in importance.spans if s.kind == "calc"],
    )


def _as_config(config: ScoringConfig | Mapping[str, Any] | None) -> ScoringConfig:
    if isinstance(config, ScoringConfig):
        return config
    return ScoringConfig.model_validate(config or {})


def _fast_path_supported(text_config: Any) -> bool:
    """The fast engine builds its own attention masks, which know nothing of sliding windows."""
    layer_types = getattr(text_config, "layer_types", None) or []
    return not getattr(text_config, "use_sliding_window", False) and all(t == "full_attention" for t in layer_types)
