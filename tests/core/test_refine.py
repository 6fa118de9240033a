"""The refine estimator against the naive reference: block drops, refined drops, the spread of the
rest, the budget it never exceeds, the order blocks are refined in, batching and cancellation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import httpx
import pytest
from result_compare import assert_close

from ccapo import Scorer, ScoringConfig, Trace
from ccapo.gsm import gsm_traces
from ccapo.jobs import EngineJob, JobScores
from ccapo.reference import reference_score
from ccapo.refine import Plan, groups, plan, refine_scores

TOLERANCE = 1e-4
# Sixteen 6-token windows per trace: enough spans for several blocks of several spans.
WINDOWS = {"segmenter": "window", "window_tokens": 6, "max_spans": 16}


@pytest.fixture(scope="module")
def scorer(llama, tokenizer) -> Scorer:
    return Scorer(llama, tokenizer)


def refine_jobs(scorer: Scorer, budget: float, count: int = 4, seed: int = 1, **config) -> list[EngineJob]:
    settings = ScoringConfig(estimator="refine", refine_budget=budget, **{**WINDOWS, **config})
    return [p.job for p in scorer.prepare(gsm_traces(count, seed=seed), settings) if p.job is not None]


def run(scorer: Scorer, jobs: Sequence[EngineJob], cancelled=lambda i: False, progress=None) -> list[JobScores]:
    return refine_scores(scorer._exact, jobs, cancelled, progress)


def drops(scores: JobScores) -> list[float]:
    return [scores.base_logprob - m for m in scores.masked_logprobs]


def test_a_budget_for_everything_is_the_exact_estimator(model, tokenizer):
    scorer = Scorer(model, tokenizer)
    jobs = refine_jobs(scorer, 1.0)
    for job, got, ref in zip(jobs, run(scorer, jobs), reference_score(model, jobs), strict=True):
        assert got.exact == [True] * len(job.spans) and len(job.spans) > 1
        assert got.base_logprob == pytest.approx(ref.base_logprob, abs=TOLERANCE)
        assert got.masked_logprobs == pytest.approx(ref.masked_logprobs, abs=TOLERANCE)
        assert got.forward_tokens == job.exact_feed_tokens == job.feed_tokens


@pytest.mark.parametrize("budget", [0.35, 0.8])
def test_every_block_is_refined_exactly_or_spread_from_its_reference_drop(scorer, budget):
    """Refined spans carry the reference's span drops; unrefined ones share the reference's drop of
    their block's whole range in proportion to their token counts (one per-token drop per block)."""
    jobs = refine_jobs(scorer, budget)
    seen = {"refined": 0, "spread": 0}
    for job, got in zip(jobs, run(scorer, jobs), strict=True):
        blocks = plan(job)
        fine, coarse = reference_score(scorer.model, [job, blocks.block_job])
        assert got.base_logprob == pytest.approx(fine.base_logprob, abs=TOLERANCE)
        for block, block_drop in zip(blocks.blocks, drops(coarse), strict=True):
            exact = {got.exact[i] for i in block}
            assert len(exact) == 1, "a block is refined whole or not at all"
            if exact == {True}:
                seen["refined"] += len(block) > 1
                assert [drops(got)[i] for i in block] == pytest.approx([drops(fine)[i] for i in block], abs=TOLERANCE)
            else:
                seen["spread"] += 1
                sizes = [job.spans[i][1] - job.spans[i][0] for i in block]
                density = [drops(got)[i] / size for i, size in zip(block, sizes, strict=True)]
                assert density == pytest.approx([block_drop / sum(sizes)] * len(block), abs=TOLERANCE)
    assert seen["spread"] > 0 and (budget < 0.5 or seen["refined"] > 0)


def test_blocks_are_about_root_n_consecutive_spans(scorer):
    (job,) = refine_jobs(scorer, 0.8, count=1)
    blocks = plan(job).blocks
    assert len(blocks) == round(math.sqrt(len(job.spans))) < len(job.spans)
    assert [i for block in blocks for i in block] == list(range(len(job.spans)))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize("budget", [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95])
def test_it_never_feeds_more_than_its_budget(scorer, budget):
    jobs = refine_jobs(scorer, budget, count=6, seed=2)
    for job, got in zip(jobs, run(scorer, jobs), strict=True):
        assert math.ceil(budget * job.exact_feed_tokens) <= job.feed_tokens <= job.exact_feed_tokens
        assert 0 < got.forward_tokens <= job.feed_tokens


def test_a_budget_below_one_block_still_pays_for_one_block(scorer, tokenizer):
    """The floor: one block of all spans, the least that yields a drop; with one span that is exact."""
    prompt = tokenizer("Q: apples?", add_special_tokens=False).input_ids
    completion = tokenizer("First 3 + 4 = 7, then 7 x 2 = 14.\n#### 14", add_special_tokens=False).input_ids
    for spans in ([(0, 6)], [(0, 3), (5, 13)]):
        trace = Trace(prompt_ids=prompt, completion_ids=completion, spans=spans)
        (prepared,) = scorer.prepare([trace], ScoringConfig(estimator="refine", refine_budget=0.01))
        (got,) = run(scorer, [prepared.job])
        assert got.forward_tokens == prepared.job.feed_tokens > math.ceil(0.01 * prepared.job.exact_feed_tokens)
        assert got.exact == [len(spans) == 1] * len(spans)
        (ref,) = reference_score(scorer.model, [plan(prepared.job).block_job])
        assert sum(drops(got)) == pytest.approx(ref.base_logprob - ref.masked_logprobs[0], abs=TOLERANCE)


# -- the order blocks are refined in, with a stand-in exact runner whose drops the test sets -------

# Nine 5-token spans before a 10-token answer, three blocks of three. "pad" rows cost the tokens
# from their span's start on, so the first block is the dearest to refine, the last the cheapest.
TOY = EngineJob(
    ids=list(range(100)),
    answer_start=90,
    spans=[(10 + 5 * k, 15 + 5 * k) for k in range(9)],
    intervention="pad",
    placeholder=0,
    estimator="refine",
)


def scripted(block_drops: list[float], calls: list[list[EngineJob]]):
    """An exact runner: base 0, each block row's drop from `block_drops`, each span row's drop 1."""

    def exact(jobs, cancelled, progress):
        calls.append(list(jobs))
        out = []
        for job in jobs:
            is_block = len(calls) == 1
            masked = [-d for d in block_drops] if is_block else [-1.0] * len(job.spans)
            out.append(JobScores(0.0, masked, job.exact_feed_tokens))
        return out

    return exact


def toy_with_room_for(extra: int) -> EngineJob:
    """TOY with a budget of its three-block pass plus `extra` tokens."""
    target = Plan(TOY, groups(list(range(9)), 3)).block_job.exact_feed_tokens + extra
    job = replace(TOY, refine_budget=target / TOY.exact_feed_tokens)
    assert target <= job.feed_tokens <= target + 1
    return job


def block_cost(block: int) -> int:
    return sum(len(b.tokens) for b in TOY.branches()[3 * block : 3 * block + 3])


@pytest.mark.parametrize(
    ("block_drops", "room", "refined"),
    [
        ([1.0, 5.0, 2.0], "middle", [1]),  # the highest drop first, not the first block
        ([1.0, 2.0, 5.0], "middle", [2]),  # the highest drop fits; what is left cannot pay for another
        ([5.0, 2.0, 1.0], "middle", [1]),  # the highest drop does not fit: skipped, the next one fits
        ([-9.0, 1.0, 2.0], "first", [2]),  # signed drops, not sizes: a large negative drop comes last
    ],
)
def test_blocks_are_refined_highest_drop_first_while_they_fit(block_drops, room, refined):
    extra = {"first": len(TOY.ids) + block_cost(0), "middle": len(TOY.ids) + block_cost(1)}
    job = toy_with_room_for(extra[room])
    assert len(plan(job).blocks) == 3
    calls: list[list[EngineJob]] = []
    (got,) = refine_scores(scripted(block_drops, calls), [job], lambda i: False)
    members = [i for b in refined for i in range(3 * b, 3 * b + 3)]
    assert got.exact == [i in members for i in range(9)]
    assert len(calls) == 2 and calls[1][0].spans == [TOY.spans[i] for i in members]
    assert got.forward_tokens == sum(j.exact_feed_tokens for c in calls for j in c) <= job.feed_tokens
    for b, drop in enumerate(block_drops):  # unrefined 5-token spans share their block's drop evenly
        expected = [1.0] * 3 if b in refined else [drop / 3] * 3
        assert drops(got)[3 * b : 3 * b + 3] == pytest.approx(expected)


def test_a_budget_that_cannot_refine_buys_the_most_blocks_that_fit():
    job = toy_with_room_for(len(TOY.ids))  # three blocks and a second base pass: no block's rows fit
    blocks = plan(job).blocks

    def cost(k: int) -> int:
        return Plan(job, groups(list(range(9)), k)).block_job.exact_feed_tokens

    assert len(blocks) > 3 and cost(len(blocks)) <= job.feed_tokens < cost(len(blocks) + 1)
    calls: list[list[EngineJob]] = []
    (got,) = refine_scores(scripted([1.0] * len(blocks), calls), [job], lambda i: False)
    assert len(calls) == 1 and got.forward_tokens == cost(len(blocks))
    assert got.exact == [len(block) == 1 for block in blocks for _ in block]


# -- batching, cancellation, progress ----------------------------------------------------------


def test_many_traces_at_once_equal_one_at_a_time(scorer):
    jobs = refine_jobs(scorer, 0.8)
    together = run(scorer, jobs)
    assert any(not all(s.exact) and any(s.exact) for s in together), "some trace must be partly refined"
    for job, batched in zip(jobs, together, strict=True):
        (alone,) = run(scorer, [job])
        assert batched.exact == alone.exact and batched.forward_tokens == alone.forward_tokens
        assert batched.masked_logprobs == pytest.approx(alone.masked_logprobs, abs=TOLERANCE)


def test_cancelled_jobs_come_back_none_in_either_pass(scorer):
    jobs = refine_jobs(scorer, 0.8)
    full = run(scorer, jobs)
    refined = max(j for j, s in enumerate(full) if any(s.exact))
    early = next(j for j in range(len(jobs)) if j != refined)
    calls = []

    def exact(batch, cancelled, progress):
        calls.append(len(batch))
        return scorer._exact(batch, cancelled, progress)

    # `early` is dropped before any work; `refined` only once its refinement pass has started.
    cancelled = lambda i: i == early or (i == refined and len(calls) == 2)  # noqa: E731
    got = refine_scores(exact, jobs, cancelled)
    assert got[early] is None and got[refined] is None and len(calls) == 2
    for j, (kept, reference) in enumerate(zip(got, full, strict=True)):
        if j not in (early, refined):
            assert kept.masked_logprobs == pytest.approx(reference.masked_logprobs, abs=TOLERANCE)


def test_progress_counts_finished_jobs(scorer):
    jobs = refine_jobs(scorer, 0.8)
    seen: list[tuple[int, int]] = []
    run(scorer, jobs, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(jobs), len(jobs))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and {t for _, t in seen} == {len(jobs)}


# -- through the Scorer and the server ------------------------------------------------------------


def test_scorer_results_carry_the_refined_drops(scorer):
    traces = gsm_traces(3, seed=1)
    config = ScoringConfig(estimator="refine", refine_budget=0.8, **WINDOWS)
    batch = scorer.score_batch(traces, config)
    jobs = [p.job for p in scorer.prepare(traces, config)]
    for result, direct in zip(batch.results, run(scorer, jobs), strict=True):
        assert [s.exact for s in result.spans] == direct.exact
        assert [s.drop for s in result.spans] == pytest.approx(drops(direct), abs=TOLERANCE)
        assert result.to_dict()["spans"][0]["exact"] == direct.exact[0]
    assert batch.usage.forward_tokens <= sum(job.feed_tokens for job in jobs)

    exact = scorer.score(traces, {**WINDOWS})
    refined = scorer.score(traces, {**WINDOWS, "estimator": "refine", "refine_budget": 1.0})
    assert_close([r.to_dict() for r in refined], [r.to_dict() for r in exact])


def test_server_scores_refine_like_the_library(server_url, tiny_model_dir):
    traces = [t.model_dump(exclude_none=True) for t in gsm_traces(2, seed=1)]
    config = {**WINDOWS, "estimator": "refine", "refine_budget": 0.8}
    response = httpx.post(f"{server_url}/v1/importance", json={"traces": traces, "config": config}, timeout=120)
    assert response.status_code == 200, response.text
    local = Scorer.from_pretrained(tiny_model_dir).score(traces, config)
    assert_close(response.json()["results"], [r.to_dict() for r in local])
    assert any(not s["exact"] for r in response.json()["results"] for s in r["spans"])


@pytest.mark.parametrize("estimator", ["refine", "gradient"])
def test_the_estimators_horizon_replaces_load_with_a_future_warning(estimator):
    with pytest.warns(FutureWarning, match=f'estimator "{estimator}" is deprecated'):
        ScoringConfig(estimator=estimator)
