"""Row attention (no dense mask) against the dense-mask form it replaces, and the engine on both
against the naive reference (1e-4, fp32)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_models import TINY
from transformers import Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer, ScoringConfig
from ccapo.engine import Engine
from ccapo.gsm import gsm_traces
from ccapo.interventions import INTERVENTIONS
from ccapo.kernels import row_attention, row_attention_unsupported
from ccapo.reference import reference_score

TOLERANCE = 1e-4


class _Attention(torch.nn.Module):
    """Stands in for a decoder layer's attention module: row attention reads only its layer index."""

    layer_idx = 0


def test_row_attention_refuses_a_call_without_its_pass():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="PassState"):
        row_attention(_Attention(), q, q, q, None)


@pytest.mark.parametrize("attention", ["merge", "fused", "dense"])
@pytest.mark.parametrize("intervention", INTERVENTIONS)
@pytest.mark.parametrize("memory", [1 << 30, 2 << 20])  # whole passes; chunked passes
def test_every_attention_form_matches_the_reference(model, tokenizer, attention, intervention, memory):
    scorer = Scorer(model, tokenizer)
    config = ScoringConfig(intervention=intervention, segmenter="sentence", min_span_tokens=2)
    jobs = [p.job for p in scorer.prepare(gsm_traces(3, seed=5), config) if p.job is not None]
    # A span that ends where the answer starts: the one layout row attention takes as a mask.
    jobs.append(replace(jobs[0], spans=[(jobs[0].answer_start - 3, jobs[0].answer_start)]))
    own = model.config._attn_implementation
    kernel = None if attention == "dense" else attention
    engine = Engine(
        model,
        max_batch_tokens=256,
        memory_bytes=memory,
        attention="dense" if attention == "dense" else "rows",
        kernel=kernel,
    )
    fast = engine.score(jobs)
    assert model.config._attn_implementation == own  # restored after scoring
    for f, s in zip(fast, reference_score(model, jobs), strict=True):
        assert f.base_logprob == pytest.approx(s.base_logprob, abs=TOLERANCE)
        assert f.masked_logprobs == pytest.approx(s.masked_logprobs, abs=TOLERANCE)


def test_a_model_with_sliding_windows_keeps_the_dense_mask(tokenizer):
    config = Qwen2Config(vocab_size=len(tokenizer), use_sliding_window=True, sliding_window=64, **TINY)
    model = Qwen2ForCausalLM(config).eval()
    assert "sliding-window" in (row_attention_unsupported(model) or "")
    assert not Engine(model).rows
    with pytest.raises(ValueError, match="attention='dense'"):
        Engine(model, attention="rows")
