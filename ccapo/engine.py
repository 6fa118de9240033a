"""The fast counterfactual engine.

For each trace it runs one base pass over the unmasked sequence and keeps its KV cache; every
counterfactual then feeds only the tokens from its first changed position on, attending to the
cached prefix. Counterfactuals of many traces share batches under a token budget, longest first,
and the LM head is applied only where an answer token is predicted. `reference.py` is the naive
method this must agree with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import torch
from transformers import DynamicCache, PreTrainedModel

from ccapo.cancellation import stop_between_layers
from ccapo.interventions import Branch, additive_mask, visibility
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress, never_cancelled
from ccapo.kernels import GEOMETRY_KWARG, row_attention_for, row_attention_unsupported, row_geometry
from ccapo.memory import MEMORY_SHARE, TokenCosts, available_memory

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class _Row:
    job: int  # index into the group of jobs
    slot: int  # index into that job's masked scores
    branch: Branch


# A batch closes when the next row would be shorter than this share of its longest row: padding
# is computed like real tokens, and a budget-only rule wasted a third of the work on padding.
MIN_FILL = 0.8
# The shortest query chunk a long row is fed in, however tight the memory: shorter ones cost more
# in per-pass overhead than the mask they save.
MIN_CHUNK = 16
# How a pass expresses which keys each row sees: "rows" as per-row structure (`kernels.py`, no
# tensor of queries x keys), "dense" as an additive mask (any model; the reference's form).
Attention = Literal["auto", "rows", "dense"]


class Engine:
    """Scores `EngineJob`s with prefix reuse, answer-only LM head and token-budget batching.

    Jobs are taken longest first in groups whose base-pass KV caches (`max_cached_tokens` padded
    positions) stay in memory while every counterfactual of the group is computed, so rows of
    similar length from many traces share a batch. `max_batch_tokens` bounds the padded tokens fed
    per forward pass.

    Memory: each `score` call plans within `memory_bytes`, by default `MEMORY_SHARE` of the memory
    free when it starts (`memory.py`). Half of it bounds the group's stored KV unless
    `max_cached_tokens` is given; the rest, beside the group's store, bounds each pass: how many
    rows gather their cached prefixes at once, and the query chunks a long row is fed in (with a
    dense mask, that mask grows with queries x keys). Chunks attend to the cache of the chunks before
    them, so chunking changes no result.

    Attention: `attention="auto"` feeds counterfactual rows through row attention (`kernels.py`)
    where the model's attention is plain, else through a dense mask, logging why.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_batch_tokens: int = 4096,
        max_cached_tokens: int | None = None,
        memory_bytes: int | None = None,
        attention: Attention = "auto",
    ):
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.max_cached_tokens = max_cached_tokens  # None: half the memory budget's worth of KV
        self.memory_bytes = memory_bytes  # None: MEMORY_SHARE of the memory free when scoring starts
        self.costs = TokenCosts.of(model)
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        # The engine's estimate of its own peak in the last `score` call: stored KV plus the largest pass.
        self.peak_estimate_bytes = 0
        unsupported = row_attention_unsupported(model)
        if attention == "rows" and unsupported:
            raise ValueError(f"row attention cannot run this model: {unsupported}; use attention='dense'")
        if attention == "auto" and unsupported:
            logger.info("counterfactual passes use a dense attention mask: %s", unsupported)
        self.rows = attention == "rows" or (attention == "auto" and unsupported is None)

    def memory_budget(self) -> int:
        """Bytes this engine plans to use beyond the model's weights, were it to start scoring now."""
        if self.memory_bytes is not None:
            return self.memory_bytes
        return int(MEMORY_SHARE * available_memory(self.model.device))

    def cached_tokens_budget(self, memory: int) -> int:
        """Padded positions of base-pass KV a group may keep under a `memory` budget."""
        return self.max_cached_tokens or max(1, memory // 2 // self.costs.kv)

    def score(self, jobs: Sequence[EngineJob], progress: Progress | None = None) -> list[JobScores]:
        """Each job's scores, aligned with `jobs`."""
        return cast(list[JobScores], self.score_cancellable(jobs, never_cancelled, progress))

    def score_cancellable(
        self, jobs: Sequence[EngineJob], cancelled: Cancelled, progress: Progress | None = None
    ) -> list[JobScores | None]:
        """`score`, asking `cancelled(i)` before every forward pass.

        Once it says True for job i, i's remaining passes are skipped and its entry is None. Other
        jobs' scores are unaffected: every row is computed on its own, whatever shares its batch.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), row_attention_for(self.model) if self.rows else nullcontext():
                return self._score(jobs, progress, cancelled)
        finally:
            self.model.train(was_training)

    def _score(
        self, jobs: Sequence[EngineJob], progress: Progress | None, cancelled: Cancelled
    ) -> list[JobScores | None]:
        results: list[JobScores | None] = [None] * len(jobs)
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].ids))
        memory = self.memory_budget()  # once, before this call's own tensors take any of it
        cached = self.cached_tokens_budget(memory)
        logger.debug("memory budget %d MiB, %d cached tokens per group", memory >> 20, cached)
        self.peak_estimate_bytes = 0
        done = 0
        for group in _buckets(order, lambda i: len(jobs[i].ids), cached, fill=0.0):
            live = [i for i in group if not cancelled(i)]
            if live:
                run = lambda idx: self._score_group([jobs[i] for i in idx], lambda k: cancelled(idx[k]), memory)  # noqa: E731
                # Once every job of the group is gone, the pass stops at its next decoder layer (entries stay None).
                with stop_between_layers(self.decoder, cancelled, live):
                    for i, scores in zip(live, _split_on_oom(run, live), strict=True):
                        results[i] = None if cancelled(i) else scores
            done += len(group)
            if progress is not None:
                progress(done, len(jobs))
        return results

    def _score_group(self, jobs: list[EngineJob], cancelled: Cancelled, memory: int) -> list[JobScores]:
        """Base passes for jobs sorted longest first, then all their branches over the cached prefixes.

        A job `cancelled` says to drop gets no further passes; its scores are meaningless and discarded.
        """
        longest = len(jobs[0].ids)
        stored_bytes = len(jobs) * longest * self.costs.kv
        room = max(0, memory - stored_bytes)  # for one pass, beside the group's stored KV
        max_rows = max(1, room // 2 // (longest * self.costs.kv))  # rows' cached prefixes: half the room
        base = [0.0] * len(jobs)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        batches = _buckets(
            list(range(len(jobs))), lambda i: len(jobs[i].ids), self.max_batch_tokens, max_items=max_rows
        )
        for batch in batches:
            batch = [i for i in batch if not cancelled(i)]
            if not batch:
                continue
            hidden, cache = self._base_pass([jobs[i] for i in batch], room, stored_bytes)
            answers = [(r, jobs[i].answer_start, jobs[i].ids[jobs[i].answer_start :]) for r, i in enumerate(batch)]
            for i, logprob in zip(batch, self._answer_logprobs(hidden, answers), strict=True):
                base[i] = logprob
            width = hidden.shape[1]
            contiguous = batch[-1] - batch[0] + 1 == len(batch)  # always, unless a job was cancelled
            stored = slice(batch[0], batch[-1] + 1) if contiguous else torch.tensor(batch, device=hidden.device)
            for layer, cached in enumerate(cache.layers):
                if layer == len(keys):  # the group's longest job comes first: size the store by it
                    shape = (len(jobs), cached.keys.shape[1], longest, cached.keys.shape[3])
                    keys.append(cached.keys.new_zeros(shape))
                    values.append(cached.values.new_zeros(shape[:3] + cached.values.shape[3:]))
                keys[layer][stored, :, :width] = cached.keys
                values[layer][stored, :, :width] = cached.values
            del hidden, cache

        rows = [_Row(j, k, b) for j, job in enumerate(jobs) for k, b in enumerate(job.branches())]
        masked = [[0.0] * len(job.spans) for job in jobs]
        fed = [len(job.ids) for job in jobs]
        for row in rows:
            fed[row.job] += len(row.branch.tokens)
        rows.sort(key=lambda row: -len(row.branch.tokens))
        # Gathering prefixes is a copy: beyond four times the fed tokens it costs more than batching saves.
        max_rows = min(max_rows, max(1, 4 * self.max_batch_tokens // longest))
        for batch in _buckets(rows, lambda row: len(row.branch.tokens), self.max_batch_tokens, max_items=max_rows):
            batch = [row for row in batch if not cancelled(row.job)]
            if not batch:
                continue
            run = lambda b: self._branch_pass(b, keys, values, jobs, room, stored_bytes)  # noqa: E731
            for row, value in zip(batch, _split_on_oom(run, batch), strict=True):
                masked[row.job][row.slot] = value
        return [JobScores(*scores) for scores in zip(base, masked, fed, strict=True)]

    def _base_pass(self, jobs: list[EngineJob], room: int, stored_bytes: int) -> tuple[torch.Tensor, DynamicCache]:
        device = self.model.device
        n = len(jobs)
        width = max(len(job.ids) for job in jobs)
        input_ids = torch.zeros((n, width), dtype=torch.long, device=device)
        for r, job in enumerate(jobs):
            input_ids[r, : len(job.ids)] = torch.tensor(job.ids, device=device)
        whole = self.costs.pass_bytes(n, width, width, masked=False)
        lengths = torch.tensor([len(job.ids) for job in jobs], device=device)
        nothing = torch.zeros(n, dtype=torch.long, device=device)
        if whole <= room:
            self._note(stored_bytes + whole)
            if self.rows:  # one chunk of a causal pass
                return self._feed(input_ids, nothing, lengths, (nothing, nothing), None, 0, width)
            # Right padding under a causal mask: no real position ever sees a padding position.
            out = self.decoder(input_ids=input_ids, use_cache=True)
            return out.last_hidden_state, out.cache
        chunk = self._chunk(room, n, width, width, stored_bytes)
        return self._feed(input_ids, nothing, lengths, (nothing, nothing), None, 0, chunk)

    def _branch_pass(
        self,
        rows: list[_Row],
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        jobs: list[EngineJob],
        room: int,
        stored_bytes: int,
    ) -> list[float]:
        device = self.model.device
        n = len(rows)
        prefix = torch.tensor([row.branch.prefix_len for row in rows], device=device)
        lengths = torch.tensor([len(row.branch.tokens) for row in rows], device=device)
        width = int(lengths.max())
        past = max(1, int(prefix.max()))
        tokens = torch.zeros((n, width), dtype=torch.long, device=device)
        for r, row in enumerate(rows):
            tokens[r, : len(row.branch.tokens)] = torch.tensor(row.branch.tokens, device=device)
        hidden_start = torch.tensor([(row.branch.hidden or (0, 0))[0] for row in rows], device=device)
        hidden_end = torch.tensor([(row.branch.hidden or (0, 0))[1] for row in rows], device=device)

        source = torch.tensor([row.job for row in rows], device=device)
        cache = DynamicCache(
            ddp_cache_data=[(k[source, :, :past], v[source, :, :past]) for k, v in zip(keys, values, strict=True)]
        )
        chunk = self._chunk(room, n, past + width, width, stored_bytes)
        hidden, _ = self._feed(tokens, prefix, lengths, (hidden_start, hidden_end), cache, past, chunk)
        answers = []
        for r, row in enumerate(rows):
            job = jobs[row.job]
            answers.append((r, row.branch.answer_start - row.branch.prefix_len, job.ids[job.answer_start :]))
        return self._answer_logprobs(hidden, answers)

    def _chunk(self, room: int, rows: int, keys: int, width: int, stored_bytes: int) -> int:
        """The longest query chunk (all of `width` if it fits) whose pass fits in `room`: row attention
        builds no mask, so only a dense-mask pass pays for queries x keys."""
        masked = not self.rows
        chunk = min(width, max(MIN_CHUNK, self.costs.queries_within(room, rows, keys, masked)))
        self._note(stored_bytes + self.costs.pass_bytes(rows, keys, chunk, masked))
        return chunk

    def _feed(
        self,
        tokens: torch.Tensor,
        prefix: torch.Tensor,
        lengths: torch.Tensor,
        hidden: tuple[torch.Tensor, torch.Tensor],
        cache: DynamicCache | None,
        past: int,
        chunk: int,
    ) -> tuple[torch.Tensor, DynamicCache]:
        """Feed row r's `tokens[r, :lengths[r]]` at positions prefix[r], prefix[r] + 1, ... in query chunks.

        Each chunk attends to the first prefix[r] of the cache's `past` positions, to the chunks fed
        before it (the cache grows by each chunk) and to itself, under the intervention's
        visibility. Returns the last hidden states (rows, width, d) and the grown cache.
        """
        device = tokens.device
        n, width = tokens.shape
        past_cols = torch.arange(past, device=device)[None].expand(n, past)
        past_valid = past_cols < prefix[:, None]
        states = []
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            new_cols = torch.arange(end, device=device)[None]
            key_pos = torch.cat([past_cols, prefix[:, None] + new_cols], dim=1)
            query_pos = key_pos[:, past + start :]
            key_valid = torch.cat([past_valid, new_cols < lengths[:, None]], dim=1)
            if self.rows:
                geometry = row_geometry(prefix, lengths, hidden, past, (start, end), query_pos, key_pos, key_valid)
                where = {GEOMETRY_KWARG: geometry}
            else:
                allowed = visibility(query_pos, key_pos, *hidden) & key_valid[:, None, :]
                where = {"attention_mask": additive_mask(allowed, self.model.dtype)}
                del allowed
            out = self.decoder(
                input_ids=tokens[:, start:end], position_ids=query_pos, cache=cache, use_cache=True, **where
            )
            cache = out.cache
            states.append(out.last_hidden_state)
            del out, where
        assert cache is not None  # width >= 1: at least one chunk ran
        return torch.cat(states, dim=1) if len(states) > 1 else states[0], cache

    def _note(self, planned_bytes: int) -> None:
        self.peak_estimate_bytes = max(self.peak_estimate_bytes, planned_bytes)

    def _answer_logprobs(self, hidden: torch.Tensor, rows: list[tuple[int, int, list[int]]]) -> list[float]:
        return answer_logprobs(self.head, self.softcap, hidden, rows)


def answer_logprobs(
    head: torch.nn.Module, softcap: float | None, hidden: torch.Tensor, rows: list[tuple[int, int, list[int]]]
) -> list[float]:
    """Sum of answer-token log-probs per row; (row, local index of the first answer token, answer ids).

    The state at local index i - 1 predicts the token at i, so only those states meet the LM head
    (`head`, its logits soft-capped at `softcap` where the model does so).
    """
    device = hidden.device
    row_idx = torch.cat([torch.full((len(a),), r, device=device) for r, _, a in rows])
    pos_idx = torch.cat([torch.arange(s - 1, s - 1 + len(a), device=device) for _, s, a in rows])
    targets = torch.tensor([t for _, _, a in rows for t in a], device=device)
    segment = torch.cat([torch.full((len(a),), k, device=device) for k, (_, _, a) in enumerate(rows)])
    logits = head(hidden[row_idx, pos_idx]).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    token_lp = logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    sums = torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, segment, token_lp.double())
    return sums.tolist()


def _buckets(
    items: Sequence[T], length: Callable[[T], int], budget: int, fill: float = MIN_FILL, max_items: int | None = None
) -> Iterator[list[T]]:
    """Consecutive batches of longest-first `items`: padded size (count x longest) within `budget`,
    every item at least `fill` of the longest, at most `max_items` items."""
    batch: list[T] = []
    for item in items:
        if batch:
            width = length(batch[0])
            if (
                (len(batch) + 1) * width > budget
                or length(item) < fill * width
                or (max_items is not None and len(batch) == max_items)
            ):
                yield batch
                batch = []
        batch.append(item)
    if batch:
        yield batch


def _split_on_oom(run: Callable[[list], list], items: list) -> list:
    """Run a batch; on CUDA out-of-memory split it in halves and retry, down to single items."""
    try:
        return run(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(items) // 2
        logger.warning("CUDA out of memory on a batch of %d; retrying as %d + %d", len(items), half, len(items) - half)
        return _split_on_oom(run, items[:half]) + _split_on_oom(run, items[half:])
