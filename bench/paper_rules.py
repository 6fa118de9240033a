"""Each rule of ccapo's default beside the authors' code, measured one at a time (bench/paper_parity.py prints it).

A trace's scoring is four choices: which spans are masked (the segmenter), which answer tokens are
scored (the window), what a masked token becomes (the mask), and how drops become weights (the
mapping). The "aligntune" preset takes all four from the authors' code and reproduces their
numbers; ccapo's own rules (`configs/paper.yaml`: `calc`, `pad`, the `paper` scheme) take all four
from ccapo. Starting from the authors' four, each row here swaps in one of ccapo's and scores the
result on the same model, so each difference of the default shows its own effect on the drops and
the weights. The rows run on ccapo's engine, which the preset row holds to the authors' numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ccapo import Scorer, ScoringConfig, WeightConfig
from ccapo.aligntune import Plan, Span, mask_id
from ccapo.jobs import EngineJob
from ccapo.prepared import PreparedTrace
from ccapo.weights import compute_token_weights

PART_NAMES = ("segmenter", "window", "mask", "mapping")
OURS = ScoringConfig(segmenter="calc", intervention="pad", weights={"scheme": "paper"})
PAPER_MAPPING = WeightConfig(scheme="paper")
PRESET_ROW = "nothing (the preset)"
ALL_OURS = "all four (paper.yaml)"
# Row name -> the parts that are ccapo's in it.
ROWS: dict[str, frozenset[str]] = {
    PRESET_ROW: frozenset(),
    "the segmenter": frozenset({"segmenter"}),
    "the answer window": frozenset({"window"}),
    "the mask token": frozenset({"mask"}),
    "the weight mapping": frozenset({"mapping"}),
    ALL_OURS: frozenset(PART_NAMES),
}


@dataclass(frozen=True)
class Parts:
    """One side's four choices for one trace, completion-relative."""

    spans: tuple[tuple[int, int, str], ...]  # token start, end, kind
    window: tuple[int, int]  # scored answer tokens [start, end); empty: the side cannot score the trace
    reasoning_end: int  # spans end by here: the authors' marker token is in neither
    mask: int  # the masked tokens' id


@dataclass(frozen=True)
class Mixed:
    """One row's answer for one trace."""

    spans: list[tuple[int, int]]
    drops: list[float]
    weights: list[float]


def rows(scorer: Scorer, traces: Sequence[Mapping[str, list[int]]]) -> dict[str, list[Mixed]]:
    """Every row of ROWS for `traces` (prompt_ids and completion_ids each), scored in one engine call."""
    theirs = scorer.prepare(traces, ScoringConfig(preset="aligntune"))
    ours = scorer.prepare(traces, OURS)
    their_mask, our_mask = mask_id(scorer.tokenizer), scorer.placeholder_id(None)
    plans = [_authors_parts(p, their_mask) for p in theirs]
    mine = [_ccapo_parts(p, our_mask) for p in ours]

    planned: list[tuple[str, int, Parts, bool]] = []
    jobs: list[EngineJob] = []
    for name, swapped in ROWS.items():
        for k, trace in enumerate(traces):
            parts = _mix(plans[k][1], mine[k], swapped)
            job = _job(trace["prompt_ids"], trace["completion_ids"], parts)
            planned.append((name, k, parts, job is not None))
            jobs += [job] if job is not None else []
    scores = iter(scorer.compute(jobs))
    out: dict[str, list[Mixed]] = {name: [] for name in ROWS}
    for name, k, parts, scored in planned:
        score = next(scores) if scored else None
        drops = [score.base_logprob - m for m in score.masked_logprobs] if score else []
        if "mapping" in ROWS[name]:
            weights = _ccapo_mapping(ours[k], parts, drops)
        else:
            weights = _authors_mapping(plans[k][0], parts, drops)
        out[name].append(Mixed([(s, e) for s, e, _ in parts.spans], drops, weights))
    return out


def _authors_parts(prepared: PreparedTrace, mask: int) -> tuple[Plan, Parts]:
    plan = prepared.plan
    spans = tuple((s.start, s.end, s.kind) for s in plan.spans)
    window = (plan.reasoning_end + 1, plan.n_tokens) if plan.marker else (plan.n_tokens, plan.n_tokens)
    return plan, Parts(spans, window, plan.reasoning_end, mask)


def _ccapo_parts(prepared: PreparedTrace, mask: int) -> Parts:
    answer = prepared.answer
    window = (answer.token_start, answer.token_end) if answer else (0, 0)
    return Parts(tuple((s.token_start, s.token_end, s.kind) for s in prepared.spans), window, window[0], mask)


def _mix(authors: Parts, ccapo: Parts, swapped: frozenset[str]) -> Parts:
    pick = {name: (ccapo if name in swapped else authors) for name in ("segmenter", "window", "mask")}
    window = pick["window"]
    spans = tuple(s for s in pick["segmenter"].spans if s[1] <= window.reasoning_end)
    return Parts(spans, window.window, window.reasoning_end, pick["mask"].mask)


def _job(prompt_ids: list[int], completion_ids: list[int], parts: Parts) -> EngineJob | None:
    start, end = parts.window
    if not parts.spans or end <= start:
        return None
    offset = len(prompt_ids)
    return EngineJob(
        ids=[*prompt_ids, *completion_ids[:end]],
        answer_start=offset + start,
        spans=[(offset + s, offset + e) for s, e, _ in parts.spans],
        intervention="pad",
        placeholder=parts.mask,
    )


def _authors_mapping(plan: Plan, parts: Parts, drops: list[float]) -> list[float]:
    """The authors' mapping (their importance, then their soft weights) over these spans and drops; a trace
    that was not scored gets their flat importance."""
    spans = tuple(Span(s, e, kind) for s, e, kind in parts.spans) if drops else ()
    return replace(plan, spans=spans).weights(drops, PAPER_MAPPING)


def _ccapo_mapping(prepared: PreparedTrace, parts: Parts, drops: list[float]) -> list[float]:
    """ccapo's `paper` scheme over these spans and drops, with ccapo's answer region (a trace without
    one keeps weight 1, as ccapo gives an unscorable trace)."""
    answer = prepared.answer
    if answer is None:
        return [1.0] * len(prepared.tokens)
    spans = [(s, e, d) for (s, e, _), d in zip(parts.spans, drops, strict=True)] if drops else []
    return compute_token_weights(
        n_tokens=len(prepared.tokens),
        reasoning_end=answer.token_start,
        answer_end=answer.token_end,
        spans=spans,
        tokens=prepared.tokens,
        config=PAPER_MAPPING,
        calculations=[(s, e) for s, e, kind in parts.spans if kind == "calc"],
    )
