"""The fast counterfactual engine.

For each group of traces it runs their base passes with the model's own causal kernel and keeps
their keys and values in one shared store (`store.py`); every counterfactual then feeds only the
tokens from its first changed position on, reading the store in place. A pass packs rows of many
traces into one sequence under a token budget, longest first (`packing.py`), attends through row
attention (`kernels.py`), and applies the LM head only where an answer token is predicted; nothing
is read back from the device until a group's last pass. `reference.py` is the naive method this
must agree with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import torch
from transformers import DynamicCache, PreTrainedModel

from ccapo.cancellation import stop_between_layers
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress, never_cancelled
from ccapo.kernels import Kernel, kernel_for, row_attention_for, row_attention_unsupported
from ccapo.memory import MEMORY_SHARE, TokenCosts, available_memory
from ccapo.packing import PassRow
from ccapo.passes import answer_logprobs, dense_pass, row_pass
from ccapo.store import KVStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The dense fallback pads rows to one width: a batch closes when the next row would be shorter than
# this share of its longest row (padding is computed like real tokens).
MIN_FILL = 0.8
# The shortest query chunk a long pass is fed in, however tight the memory: shorter ones cost more
# in per-pass overhead than they save.
MIN_CHUNK = 16
# How a pass expresses which keys each row sees: "rows" as per-row structure (`kernels.py`, no
# tensor of queries x keys), "dense" as an additive mask (any model; the reference's form).
Attention = Literal["auto", "rows", "dense"]


class Engine:
    """Scores `EngineJob`s with prefix reuse, answer-only LM head and token-budget batching.

    Jobs are taken longest first in groups whose base-pass keys and values (`max_cached_tokens`
    positions) stay in one shared store while every counterfactual of the group is computed, so
    rows from many traces share a pass. `max_batch_tokens` bounds the tokens fed per forward pass.

    Memory: each `score` call plans within `memory_bytes`, by default `MEMORY_SHARE` of the memory
    free when it starts (`memory.py`). Half of it bounds the group's store unless
    `max_cached_tokens` is given; the rest, beside the store, bounds each pass: the query chunks a
    long pass is fed in (with a dense mask, that mask grows with queries x keys, and each row
    gathers its prefix). Chunks attend to the keys of the chunks before them, so chunking changes
    no result.

    Attention: `attention="auto"` feeds counterfactual rows through row attention (`kernels.py`)
    where the model's attention is plain, else through a dense mask, logging why. `kernel` picks
    row attention's kernel, "merge" or "fused" (default: the device's, `kernels.DEVICE_KERNEL`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_batch_tokens: int = 4096,
        max_cached_tokens: int | None = None,
        memory_bytes: int | None = None,
        attention: Attention = "auto",
        kernel: Kernel | None = None,
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
        self.kernel: Kernel = kernel or kernel_for(model.device)  # row attention's kernel (`kernels.py`)

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
            with torch.inference_mode():
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
        """Base passes for jobs sorted longest first, then all their branches over the shared store.

        A job `cancelled` says to drop gets no further passes; its scores are meaningless and discarded.
        """
        rows = [
            (j, k, PassRow.exact(j, b, len(job.ids) - job.answer_start))
            for j, job in enumerate(jobs)
            for k, b in enumerate(job.branches())
        ]
        limit = self.pass_limit(jobs, memory)
        fed_room = self.fed_room([len(row.tokens) for _, _, row in rows], limit)
        group = self.open_group(jobs, cancelled, memory, fed_room, limit)
        masked = [[0.0] * len(job.spans) for job in jobs]
        fed = [len(job.ids) for job in jobs]
        for (j, k, row), value in zip(rows, group.run([row for _, _, row in rows], cancelled), strict=True):
            masked[j][k] = value
            fed[j] += len(row.tokens)
        return [JobScores(*scores) for scores in zip(group.base, masked, fed, strict=True)]

    def pass_limit(self, jobs: list[EngineJob], memory: int) -> int:
        """Tokens one packed pass may feed: `max_batch_tokens`, or fewer where the group's store (its base
        keys and the fed columns) would outgrow the cached-token share of `memory` (`cached_tokens_budget`)."""
        base = len(jobs) * len(jobs[0].ids)
        return min(self.max_batch_tokens, max(1, self.cached_tokens_budget(memory) - base))

    def fed_room(self, lengths: list[int], limit: int) -> int:
        """Store columns that passes of at most `limit` tokens over rows of these token counts feed at
        most at once (none for the dense fallback, whose rows keep their own caches)."""
        if not self.rows:
            return 0
        return max([sum(batch) for batch in self._packs(sorted(lengths, reverse=True), lambda n: n, limit)] or [0])

    def open_group(self, jobs: list[EngineJob], cancelled: Cancelled, memory: int, fed: int, limit: int) -> Group:
        """The jobs' base passes in one shared store with `fed` columns for passes to feed, and their
        base log-probs (read once, after the last base pass)."""
        longest = len(jobs[0].ids)
        stored_bytes = (len(jobs) * longest + fed) * self.costs.kv
        room = max(0, memory - stored_bytes)  # for one pass, beside the group's stored KV
        max_rows = max(1, room // 2 // (longest * self.costs.kv))  # a base pass's own cache: half the room
        group = Group(self, None, [0.0] * len(jobs), room, stored_bytes, max_rows, limit)
        found: list[tuple[list[int], torch.Tensor]] = []
        for batch in _buckets(
            list(range(len(jobs))), lambda i: len(jobs[i].ids), self.max_batch_tokens, max_items=max_rows
        ):
            batch = [i for i in batch if not cancelled(i)]
            if not batch:
                continue
            hidden, layers = self._base_pass([jobs[i] for i in batch], room, stored_bytes)
            if group.store is None:
                group.store = KVStore.empty(layers, len(jobs), longest, fed)
            for r, i in enumerate(batch):
                group.store.put(i, layers, r, len(jobs[i].ids))
            width = hidden.shape[1]
            answers = [
                (r * width + jobs[i].answer_start - 1 + k, t, r)
                for r, i in enumerate(batch)
                for k, t in enumerate(jobs[i].ids[jobs[i].answer_start :])
            ]
            index, targets, row = torch.tensor(answers, device=hidden.device).unbind(1)
            found.append(
                (batch, answer_logprobs(self.head, self.softcap, hidden.flatten(0, 1), index, targets, row, len(batch)))
            )
            del hidden, layers
        if found:
            for i, value in zip(
                [i for b, _ in found for i in b], torch.cat([t for _, t in found]).tolist(), strict=True
            ):
                group.base[i] = value
        return group

    def _base_pass(
        self, jobs: list[EngineJob], room: int, stored_bytes: int
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The jobs' causal pass, right-padded, through the model's own attention: last hidden states
        and per-layer keys and values. Fed in query chunks where the whole pass does not fit."""
        n, width = len(jobs), max(len(job.ids) for job in jobs)
        input_ids = torch.tensor([job.ids + [0] * (width - len(job.ids)) for job in jobs], device=self.model.device)
        whole = self.costs.pass_bytes(n, width, width, masked=False)
        # Right padding under a causal mask: no real position ever sees a padding position.
        chunk = width if whole <= room else self._chunk(room, n, width, width, stored_bytes, masked=True)
        self._note(stored_bytes + min(whole, self.costs.pass_bytes(n, width, chunk)))
        cache, states = DynamicCache(), []
        for start in range(0, width, chunk):
            out = self.decoder(input_ids=input_ids[:, start : start + chunk], cache=cache, use_cache=True)
            cache = out.cache
            states.append(out.last_hidden_state)
        hidden = torch.cat(states, dim=1) if len(states) > 1 else states[0]
        return hidden, [(layer.keys, layer.values) for layer in cache.layers]

    def _packs(self, rows: list[T], length: Callable[[T], int], limit: int) -> list[list[T]]:
        """Longest-first rows packed into passes of at most `limit` fed tokens (a longer row alone):
        packed rows carry no padding, so rows of any length share a pass."""
        batches: list[list[T]] = []
        total = 0
        for row in rows:
            if not batches or total + length(row) > limit:
                batches.append([])
                total = 0
            batches[-1].append(row)
            total += length(row)
        return batches

    def _chunk(self, room: int, rows: int, keys: int, width: int, stored_bytes: int, masked: bool) -> int:
        """The longest query chunk (all of `width` if it fits) whose pass fits in `room`: a packed pass
        of row attention is one row that reads the store in place and builds no mask."""
        chunk = min(width, max(MIN_CHUNK, self.costs.queries_within(room, rows, keys, masked)))
        self._note(stored_bytes + self.costs.pass_bytes(rows, keys, chunk, masked))
        return chunk

    def _note(self, planned_bytes: int) -> None:
        self.peak_estimate_bytes = max(self.peak_estimate_bytes, planned_bytes)


@dataclass
class Group:
    """A group of jobs' shared store and base log-probs; `run` scores counterfactual rows over it."""

    engine: Engine
    store: KVStore | None
    base: list[float]
    room: int
    stored_bytes: int
    max_rows: int  # the dense fallback's rows per pass (each gathers its prefix)
    pass_limit: int  # tokens a packed pass of row attention feeds at most (`Engine.pass_limit`)

    def run(self, rows: list[PassRow], cancelled: Cancelled) -> list[float]:
        """Each row's answer log-prob (0.0 for a row of a cancelled job), read from the device once."""
        engine, store = self.engine, self.store
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
        results = [0.0] * len(rows)
        if store is None:  # every job cancelled before its base pass
            return results
        if engine.rows:
            batches = engine._packs([rows[i] for i in order], lambda row: len(row.tokens), self.pass_limit)
        else:
            longest = store.stride
            limit = min(self.max_rows, max(1, 4 * engine.max_batch_tokens // longest))
            length = lambda row: len(row.tokens)  # noqa: E731
            batches = list(_buckets([rows[i] for i in order], length, engine.max_batch_tokens, max_items=limit))
        found: list[tuple[list[int], torch.Tensor]] = []
        at = 0
        for batch in batches:
            picked = [i for i in order[at : at + len(batch)] if not cancelled(rows[i].slot)]
            at += len(batch)
            if picked:
                found.append((picked, _split_on_oom(lambda b: self._pass([rows[i] for i in b]), picked)))
        if found:
            for i, value in zip(
                [i for b, _ in found for i in b], torch.cat([t for _, t in found]).tolist(), strict=True
            ):
                results[i] = value
        return results

    def _pass(self, rows: list[PassRow]) -> torch.Tensor:
        engine, store = self.engine, self.store
        assert store is not None
        if engine.rows:
            total = sum(len(row.tokens) for row in rows)
            chunk = engine._chunk(self.room, 1, 0, total, self.stored_bytes, masked=False)
            with row_attention_for(engine.model):
                return row_pass(engine.decoder, engine.head, engine.softcap, store, rows, engine.kernel, chunk)
        width, past = max(len(row.tokens) for row in rows), max(1, max(row.prefix for row in rows))
        chunk = engine._chunk(self.room, len(rows), past + width, width, self.stored_bytes, masked=True)
        return dense_pass(engine.decoder, engine.head, engine.softcap, store, rows, chunk, engine.model.dtype)


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


def _split_on_oom(run: Callable[[list], torch.Tensor], items: list) -> torch.Tensor:
    """Run a batch; on CUDA out-of-memory split it in halves and retry, down to single items."""
    try:
        return run(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(items) // 2
        logger.warning("CUDA out of memory on a batch of %d; retrying as %d + %d", len(items), half, len(items) - half)
        return torch.cat([_split_on_oom(run, items[:half]), _split_on_oom(run, items[half:])])
