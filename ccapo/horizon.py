"""Windowed recomputation (`estimator="horizon"`): per span, recompute only what is near it and the answer.

The exact engine recomputes every suffix token of a counterfactual. Here a row recomputes the span
itself (pad), the `horizon_window` tokens after it, the `horizon_tail` tokens before the answer, and
the answer (from the state that predicts its first token); every other suffix token keeps its key
and value from the base pass. A later token's text does not change under the intervention, so most
of a span's effect reaches the answer through that text, which stays; what the stale keys and values
miss is the span's effect on their hidden states. Recomputed, the tail sees the intervention
directly; on long traces it narrows that miss only in bulk (docs/long-reasoning.md). For
`delete` the reused keys sit `span length` positions later than in the counterfactual: the queries
that read them are turned by that many positions instead (RoPE rotations compose exactly, and a
query turned forward meets a key as the unturned one meets it moved back), so the keys are read
where they lie; only their content is stale. For `attention` nothing moves: the span stays cached
and the recomputed queries do not see it. A row with nothing stale (a span within the window of the
answer) is exact.

Then `horizon_verify` spans per trace, those with the largest |estimated drop|, get exact drops: their
whole suffixes are recomputed over the same base pass, and only they and the rows with nothing
stale carry `exact: True`.

Traces are scored in groups like the exact engine's (`engine.py`): their base passes share one
store, and the windowed rows of all of them share packed passes (`packing.py`). Supported: every
intervention, on models row attention supports (`row_attention_unsupported`).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel

from ccapo.engine import Engine
from ccapo.interventions import windowed_branch
from ccapo.jobs import Cancelled, EngineJob, JobScores, Progress
from ccapo.kernels import row_attention_unsupported
from ccapo.packing import PassRow


def horizon_unsupported(model: PreTrainedModel) -> str | None:
    """Why the horizon estimator cannot score on this model, or None when it can."""
    return row_attention_unsupported(model)


def horizon_scores(
    model: PreTrainedModel,
    jobs: Sequence[EngineJob],
    cancelled: Cancelled,
    progress: Progress | None = None,
) -> list[JobScores | None]:
    """Every job's drops by windowed recomputation, then its `horizon_verify` largest made exact."""
    return HorizonEngine(model, attention="rows").score_cancellable(jobs, cancelled, progress)


class HorizonEngine(Engine):
    """The exact engine's groups, store and passes, feeding windowed rows instead of whole suffixes."""

    def _score_group(self, jobs: list[EngineJob], cancelled: Cancelled, memory: int) -> list[JobScores]:
        """One base pass per job, its keys and values shared by the windowed rows and then by the
        verified spans' whole suffixes (a window past the answer leaves nothing stale: the exact row)."""
        answers = [len(job.ids) - job.answer_start for job in jobs]
        windowed = [[PassRow.windowed(j, w, answers[j]) for w in job.windowed_branches()] for j, job in enumerate(jobs)]
        # The verified rows are not known yet: room for the longest ones any job may pick.
        longest = [sorted(len(b.tokens) for b in job.branches())[::-1][: job.horizon_verify] for job in jobs]
        candidates = [n for lengths in longest for n in lengths]
        limit = self.pass_limit(jobs, memory)
        fed = max(
            self.fed_room([len(row.tokens) for rows in windowed for row in rows], limit),
            self.fed_room(candidates, limit),
        )
        group = self.open_group(jobs, cancelled, memory, fed, limit)

        flat = group.run([row for rows in windowed for row in rows], cancelled)
        masked, exact, forward = [], [], []
        for j, rows in enumerate(windowed):
            masked.append(flat[: len(rows)])
            flat = flat[len(rows) :]
            exact.append([row.stale[1] == row.stale[0] for row in rows])
            forward.append(len(jobs[j].ids) + sum(len(row.tokens) for row in rows))

        whole = []
        for j, job in enumerate(jobs):
            base = group.base[j]
            estimated = sorted(((abs(base - m), k) for k, m in enumerate(masked[j]) if not exact[j][k]), reverse=True)
            knobs = (job.intervention, job.placeholder, len(job.ids))  # a window past the answer: the exact row
            for _, k in estimated[: job.horizon_verify]:
                b = windowed_branch(job.ids, job.answer_start, job.spans[k], *knobs)
                whole.append((j, k, PassRow.windowed(j, b, answers[j])))
        for (j, k, row), value in zip(whole, group.run([row for _, _, row in whole], cancelled), strict=True):
            masked[j][k], exact[j][k] = value, True
            forward[j] += len(row.tokens)
        return [JobScores(*scores) for scores in zip(group.base, masked, forward, exact, strict=True)]
