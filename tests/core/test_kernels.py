"""Row attention (no dense mask) against the dense-mask form it replaces, and the engine on both
against the naive reference (1e-4, fp32)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY
from transformers import Qwen2Config, Qwen2ForCausalLM

from ccapo import Scorer, ScoringConfig, kernels
from ccapo.engine import Engine
from ccapo.gsm import gsm_traces
from ccapo.interventions import INTERVENTIONS, visibility
from ccapo.kernels import RowGeometry, row_attention, row_attention_unsupported, row_geometry
from ccapo.reference import reference_score

TOLERANCE = 1e-4


class _Attention(torch.nn.Module):
    """Stands in for a decoder layer's attention module: row attention reads nothing from it."""


@pytest.mark.parametrize("merge", [True, False], ids=["log-sum-exp merge (CPU)", "lower-right causal (CUDA)"])
def test_row_attention_equals_masked_attention_for_every_row_layout(merge, monkeypatch):
    """Rows of one chunk with different prefixes, lengths and hidden ranges, over a padded cache; the
    CUDA path runs here too (its CausalBias is materialized on CPU, its arithmetic is the same)."""
    monkeypatch.setattr(kernels, "MERGE_DEVICES", ("cpu",) if merge else ())
    torch.manual_seed(0)
    past, start, end, heads, kv_heads, dim = 12, 3, 9, 4, 2, 8
    prefix = torch.tensor([12, 5, 0, 9, 7])
    lengths = torch.tensor([9, 4, 9, 2, 8])
    hidden = (torch.tensor([0, 0, 0, 2, 4]), torch.tensor([0, 0, 0, 6, 8]))  # rows 3, 4 hide a span
    cols = torch.arange(end)[None]
    key_pos = torch.cat([torch.arange(past)[None].expand(5, past), prefix[:, None] + cols], dim=1)
    query_pos = key_pos[:, past + start :]
    key_valid = torch.cat([torch.arange(past)[None] < prefix[:, None], cols < lengths[:, None]], dim=1)
    geometry = row_geometry(prefix, lengths, hidden, past, (start, end), query_pos, key_pos, key_valid)
    assert geometry.masks[4] is not None and all(m is None for m in geometry.masks[:4])  # row 4 starts inside

    query = torch.randn(5, heads, end - start, dim)
    key, value = torch.randn(5, kv_heads, past + end, dim), torch.randn(5, kv_heads, past + end, dim)
    out, _ = row_attention(_Attention(), query, key, value, None, scaling=0.3, ccapo_rows=geometry)

    allowed = visibility(query_pos, key_pos, *hidden) & key_valid[:, None, :]
    dense = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed[:, None], scale=0.3, enable_gqa=True)
    for r in range(5):
        n = max(0, min(end, int(lengths[r])) - start)
        torch.testing.assert_close(out[r, :n], dense[r, :, :n].transpose(0, 1), atol=1e-5, rtol=0)
        assert not out[r, n:].any()  # padding queries: zeros, never read


def test_row_attention_refuses_a_call_without_geometry():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="RowGeometry"):
        row_attention(_Attention(), q, q, q, None)
    with pytest.raises(RuntimeError, match="RowGeometry"):
        row_attention(_Attention(), q, q, q, None, ccapo_rows=RowGeometry([[]], [None]), dropout=0.1)


@pytest.mark.parametrize("attention", ["rows", "dense"])
@pytest.mark.parametrize("intervention", INTERVENTIONS)
@pytest.mark.parametrize("memory", [1 << 30, 2 << 20])  # whole passes; chunked passes of one row
def test_both_attention_forms_match_the_reference(model, tokenizer, attention, intervention, memory):
    scorer = Scorer(model, tokenizer)
    config = ScoringConfig(intervention=intervention, segmenter="sentence", min_span_tokens=2)
    jobs = [p.job for p in scorer.prepare(gsm_traces(3, seed=5), config) if p.job is not None]
    # A span that ends where the answer starts: the one layout row attention takes as a mask.
    jobs.append(replace(jobs[0], spans=[(jobs[0].answer_start - 3, jobs[0].answer_start)]))
    own = model.config._attn_implementation
    engine = Engine(model, max_batch_tokens=256, memory_bytes=memory, attention=attention)
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
