"""The shape a GPU needs, held on the CPU: a pass's attention is a fixed number of kernel calls per
layer however many rows it packs (torch.profiler op counts), and nothing inside a pass reads a
device tensor back to the host. Tiny model, one trace; about 20 s in all."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from ccapo import engine as engine_module
from ccapo.engine import Engine
from ccapo.horizon import HorizonEngine
from ccapo.jobs import EngineJob
from ccapo.reference import reference_score

# The CPU's attention kernels: SDPA's flash kernel (the base pass's causal call, the merge path's
# calls) and FlexAttention's unfused implementation (one scores and one output product per call).
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm")


def _job(spans: int, intervention: str = "pad", **knobs) -> EngineJob:
    ids = [(7 * i + 3) % 400 for i in range(140)]
    return EngineJob(
        ids=ids,
        answer_start=130,
        spans=[(10 + 3 * i, 12 + 3 * i) for i in range(spans)],
        intervention=intervention,
        placeholder=3,
        **knobs,
    )


def _attention_calls(engine: Engine, job: EngineJob) -> tuple[collections.Counter, int]:
    """Attention kernel calls while scoring `job`, and the decoder's forward passes."""
    passes = []
    handle = engine.decoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            engine.score([job])
    finally:
        handle.remove()
    counts = collections.Counter(e.name for e in prof.events() if e.name in ATTENTION_OPS)
    return counts, len(passes)


def test_a_fused_pass_makes_the_same_attention_calls_for_4_rows_as_for_32(llama):
    layers = llama.config.num_hidden_layers
    engine = Engine(llama, max_batch_tokens=1 << 16, memory_bytes=1 << 30, kernel="fused")
    engine.score([_job(4)])  # warm-up: FlexAttention's first call traces its mask function
    few, few_passes = _attention_calls(engine, _job(4))
    many, many_passes = _attention_calls(engine, _job(32))
    assert few_passes == many_passes == 2  # the base pass, then one pass of all rows
    assert few == many
    # The base pass: the model's own causal kernel, once per layer; the row pass: one FlexAttention
    # call per layer (its scores and its output).
    assert few == {ATTENTION_OPS[0]: layers, ATTENTION_OPS[1]: 2 * layers}


def test_the_merge_path_calls_its_kernel_per_row_segment(llama):
    """The CPU's default kernel is the one that grows with rows: measured faster there (docs/performance.md)."""
    engine = Engine(llama, max_batch_tokens=1 << 16, memory_bytes=1 << 30, kernel="merge")
    few, _ = _attention_calls(engine, _job(4))
    many, _ = _attention_calls(engine, _job(32))
    assert many[ATTENTION_OPS[0]] > few[ATTENTION_OPS[0]]


class HostSync(AssertionError):
    pass


@contextmanager
def no_host_sync() -> Iterator[None]:
    """Inside the block every way of reading a tensor's value on the host raises."""
    names = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "cpu", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostSync(f"Tensor.{name} inside a pass")

        return method

    for name in names:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def test_the_guard_catches_a_host_sync():
    with no_host_sync(), pytest.raises(HostSync):
        int(torch.ones(()))


@pytest.mark.parametrize("kernel", ["merge", "fused"])
@pytest.mark.parametrize(
    ("intervention", "estimator"), [("delete", "exact"), ("attention", "exact"), ("delete", "horizon")]
)
def test_no_host_sync_inside_a_pass(llama, monkeypatch, kernel, intervention, estimator):
    """Every counterfactual pass runs under the guard (packing, the forward, the answer log-probs);
    the results, read after the group's last pass, still match the reference. The horizon rows
    read stale keys through rotated queries (`delete`), so they are estimates."""
    inner = engine_module.row_pass

    def guarded(*args, **kwargs):
        with no_host_sync():
            return inner(*args, **kwargs)

    monkeypatch.setattr(engine_module, "row_pass", guarded)
    job = _job(6, intervention, estimator=estimator, horizon_window=4)
    cls = HorizonEngine if estimator == "horizon" else Engine
    (scores,) = cls(llama, max_batch_tokens=1 << 16, memory_bytes=1 << 30, kernel=kernel, attention="rows").score([job])
    if estimator == "horizon":
        assert scores.exact is not None and not any(scores.exact)
        return
    (reference,) = reference_score(llama, [job])
    assert scores.masked_logprobs == pytest.approx(reference.masked_logprobs, abs=1e-4)
