"""The Scorer contract: alignment, targets, placeholders, re-weighting and bad input."""

from __future__ import annotations

import json
import re

import pytest

from ccapo import Scorer, ScoringConfig, Trace, TraceError, TraceImportance, WeightConfig, token_weights
from ccapo.gsm import gsm_traces, math_prompt

COMPLETION = "We have 3 + 4 = 7 apples in the basket now.\nDoubling gives 7 × 2 = 14 apples.\n#### 14"


@pytest.fixture(scope="module")
def scorer(llama, tokenizer) -> Scorer:
    return Scorer(llama, tokenizer)


def test_text_trace_weights_align_with_completion_tokens(scorer, tokenizer):
    (result,) = scorer.score([Trace(prompt="How many apples?", completion=COMPLETION)])
    ids = tokenizer(COMPLETION, add_special_tokens=False).input_ids
    assert result.status == "ok" and result.reason is None
    assert len(result.token_weights) == len(result.tokens) == len(ids)
    assert "".join(result.tokens) == COMPLETION
    assert [s.kind for s in result.spans] == ["calc", "calc"]
    for span in result.spans:
        assert span.text == COMPLETION[span.start : span.end]
        assert "".join(result.tokens[span.token_start : span.token_end]) == span.text
        assert span.drop == pytest.approx(result.base_logprob - span.masked_logprob)
    assert result.answer.marker == "####" and result.answer.text == "#### 14"
    assert "".join(result.tokens[result.answer.token_start : result.answer.token_end]) == "#### 14"


def test_token_id_trace_is_used_verbatim(scorer, tokenizer):
    prompt_ids = tokenizer("How many apples?").input_ids
    completion_ids = tokenizer(COMPLETION, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] * 3
    (result,) = scorer.score([Trace(prompt_ids=prompt_ids, completion_ids=completion_ids, spans=[(0, 4), (6, 9)])])
    assert len(result.token_weights) == len(completion_ids)
    assert [(s.token_start, s.token_end) for s in result.spans] == [(0, 4), (6, 9)]
    # Trailing EOS/padding is not answer: it keeps weight 1.0 (the paper's padding weight).
    assert result.answer.token_end == len(completion_ids) - 3
    assert result.token_weights[-3:] == [1.0, 1.0, 1.0]
    assert result.token_weights[result.answer.token_start] == pytest.approx(1.0)  # the default, normalized
    paper = token_weights(result, WeightConfig(scheme="paper"))
    assert paper[result.answer.token_start] == pytest.approx(1.5) and paper[-3:] == [1.0, 1.0, 1.0]


def test_text_and_token_id_forms_agree(scorer, tokenizer):
    text = Trace(prompt="How many apples?", completion=COMPLETION)
    (by_text,) = scorer.score([text])
    prompt_ids = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "How many apples?"}], tokenize=False, add_generation_prompt=True
        ),
        add_special_tokens=False,
    ).input_ids
    ids = Trace(prompt_ids=prompt_ids, completion_ids=tokenizer(COMPLETION, add_special_tokens=False).input_ids)
    (by_ids,) = scorer.score([ids])
    assert by_ids.base_logprob == pytest.approx(by_text.base_logprob, abs=1e-5)
    assert [s.drop for s in by_ids.spans] == pytest.approx([s.drop for s in by_text.spans], abs=1e-5)


def test_chat_message_prompt(scorer):
    (result,) = scorer.score([Trace(prompt=math_prompt("How many apples?"), completion=COMPLETION)])
    assert result.ok


def test_reference_target_scores_the_reference_answer(scorer):
    trace = Trace(prompt="How many apples?", completion=COMPLETION, reference_answer="15")
    (own,) = scorer.score([trace])
    (ref,) = scorer.score([trace], ScoringConfig(target="reference"))
    assert ref.answer.text == "#### 15" and ref.target == "reference"
    assert ref.base_logprob != pytest.approx(own.base_logprob)
    assert len(ref.token_weights) == len(own.token_weights)
    (no_marker,) = scorer.score(
        [Trace(prompt="How many?", completion="We have 3 + 4 = 7 apples here.", reference_answer="7")],
        {"target": "reference"},
    )
    assert no_marker.ok and no_marker.answer.text == "\n#### 7"
    assert no_marker.answer.token_start == len(no_marker.tokens)  # the whole completion is reasoning


def test_unscorable_traces_never_fail_their_neighbours(scorer):
    traces = [
        Trace(prompt="Q", completion=COMPLETION),
        Trace(prompt="Q", completion="I am not sure how to solve this."),
        Trace(prompt="Q", completion=""),
        Trace(prompt="Q", completion="#### 14"),
        Trace(prompt="Q", completion=COMPLETION),
        Trace(prompt_ids=[1, 2], completion_ids=[]),
    ]
    results = scorer.score(traces)
    assert [r.status for r in results] == ["ok", "unscorable", "unscorable", "unscorable", "ok", "unscorable"]
    assert "no answer marker" in results[1].reason
    assert "empty" in results[2].reason
    assert "no reasoning" in results[3].reason
    for result in results[1:4]:
        assert result.token_weights == [1.0] * len(result.tokens) and result.spans == []
    assert results[0].base_logprob == pytest.approx(results[4].base_logprob, abs=1e-5)


@pytest.mark.parametrize(
    ("trace", "config", "message"),
    [
        (dict(prompt="Q", completion=COMPLETION, spans=[(0, 10), (5, 20)]), {}, "overlap"),
        (dict(prompt="Q", completion=COMPLETION, spans=[(0, 1000)]), {}, "must lie in"),
        (dict(prompt="Q", completion=COMPLETION, spans=[(75, 85)]), {}, "answer"),
        (dict(prompt_ids=[1, 2], completion_ids=[5, 10**7]), {}, "completion_ids[1] = 10000000"),
        (dict(prompt_ids=[-1], completion_ids=[5]), {}, "prompt_ids[0] = -1"),
        (dict(prompt="Q", prompt_ids=[1], completion=COMPLETION), {}, "not both"),
        (dict(prompt="Q", completion=COMPLETION), {"target": "reference"}, "reference_answer"),
        (dict(prompt="Q", completion=COMPLETION), {"segmenter": "custom"}, "needs spans"),
        (dict(prompt="Q", completion=COMPLETION * 80), {}, "longer than the model's context"),
        (dict(prompt="Q", completion="lone \udc80 surrogate #### 1"), {}, "could not be tokenized"),
        (dict(prompt=[], completion=COMPLETION), {}, "non-empty list"),
    ],
)
def test_bad_input_names_the_trace(scorer, trace, config, message):
    good = Trace(prompt="Q", completion=COMPLETION, reference_answer="14", spans=[(8, 17)])
    with pytest.raises(TraceError, match=re.escape(message)) as info:
        scorer.score([good, trace], config)
    assert info.value.trace_index == 1
    assert str(info.value).startswith("trace 1: ")


def test_unknown_config_values_are_rejected(scorer):
    with pytest.raises(ValueError, match="intervention"):
        scorer.score([Trace(prompt="Q", completion=COMPLETION)], {"intervention": "blur"})
    with pytest.raises(ValueError, match="extra"):
        ScoringConfig(segmentr="line")


def test_placeholder_is_never_end_of_turn(scorer, tokenizer):
    default = scorer.placeholder_id()
    assert default not in {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id}
    assert tokenizer.decode([default]) == " "
    assert scorer.placeholder_id(" the") == tokenizer(" the", add_special_tokens=False).input_ids[0]
    with pytest.raises(ValueError, match="single token"):
        scorer.placeholder_id("a long placeholder")
    (prepared,) = scorer.prepare([Trace(prompt="Q", completion=COMPLETION)], {"intervention": "pad", "placeholder": 42})
    job = prepared.job
    assert job.placeholder == 42


def test_reweighting_without_rescoring(scorer):
    traces = gsm_traces(2, seed=5)
    paper = scorer.score(traces)
    for scheme in ("normalized", "inverted", "uniform"):
        again = scorer.score(traces, ScoringConfig(weights=WeightConfig(scheme=scheme)))
        for p, a in zip(paper, again, strict=True):
            assert token_weights(p, WeightConfig(scheme=scheme)) == pytest.approx(a.token_weights)
    random_a = token_weights(paper[0], {"scheme": "random", "seed": 1})
    assert random_a == token_weights(paper[0], {"scheme": "random", "seed": 1})
    assert random_a != token_weights(paper[0], {"scheme": "random", "seed": 2})


def test_result_round_trips_through_json(scorer):
    (result,) = scorer.score([Trace(prompt="Q", completion=COMPLETION)])
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) >= {"status", "reason", "base_logprob", "spans", "token_weights", "tokens", "answer"}
    assert set(data["spans"][0]) == {
        "start", "end", "token_start", "token_end", "text", "kind", "masked_logprob", "drop", "exact"
    }  # fmt: skip
    assert TraceImportance.from_dict(data) == result


def test_usage_counts_the_work(scorer):
    batch = scorer.score_batch([Trace(prompt="Q", completion=COMPLETION), Trace(prompt="Q", completion="no")])
    assert batch.usage.traces == 2
    assert batch.usage.counterfactuals == len(batch.results[0].spans)
    assert batch.usage.forward_tokens > 0 and batch.usage.compute_ms > 0
