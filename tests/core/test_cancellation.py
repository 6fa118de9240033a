"""Abandoned work stops within one decoder layer: counted layer by layer on a tiny model, scores unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from ccapo import Scorer, ScoringConfig
from ccapo.cancellation import decoder_layers, stop_between_layers
from ccapo.engine import Engine
from ccapo.gsm import gsm_traces
from ccapo.jobs import EngineJob, JobScores

TOLERANCE = 1e-4


class LayerCounter:
    """Counts decoder layers as they finish; `cancel_after` layers in, it marks the chosen jobs gone."""

    def __init__(self, engine: Engine, cancel_after: int, jobs: set[int]):
        self.layers = decoder_layers(engine.decoder)
        self.cancel_after = cancel_after
        self.jobs = jobs
        self.ran = 0
        self.ran_when_cancelled: int | None = None

    def cancelled(self, job: int) -> bool:
        return self.ran_when_cancelled is not None and job in self.jobs

    def _count(self, *_: object) -> None:
        self.ran += 1
        if self.ran == self.cancel_after:
            self.ran_when_cancelled = self.ran

    @property
    def after_cancelling(self) -> int:
        assert self.ran_when_cancelled is not None, "the jobs were never cancelled"
        return self.ran - self.ran_when_cancelled

    def __enter__(self) -> LayerCounter:
        self._handles = [layer.register_forward_hook(self._count) for layer in self.layers]
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.fixture(scope="module")
def jobs(llama, tokenizer) -> list[EngineJob]:
    config = ScoringConfig(intervention="pad", segmenter="sentence", min_span_tokens=2)
    return [p.job for p in Scorer(llama, tokenizer).prepare(gsm_traces(3, seed=2), config) if p.job is not None]


@pytest.fixture(scope="module")
def full(llama, jobs) -> list[JobScores]:
    return Engine(llama).score(jobs)


def assert_same_scores(got: JobScores | None, expected: JobScores) -> None:
    assert got is not None
    assert got.base_logprob == pytest.approx(expected.base_logprob, abs=TOLERANCE)
    assert got.masked_logprobs == pytest.approx(expected.masked_logprobs, abs=TOLERANCE)


def test_a_pass_whose_jobs_are_all_gone_stops_at_the_next_decoder_layer(llama, jobs, full):
    engine = Engine(llama)  # the default budget: few, long passes, the case a between-pass check left slow
    assert len(decoder_layers(engine.decoder)) == 2
    with LayerCounter(engine, cancel_after=1, jobs={0, 1, 2}) as counter:  # gone in the middle of the first pass
        got = engine.score_cancellable(jobs, counter.cancelled)
    assert got == [None, None, None]
    assert counter.after_cancelling == 0  # not one more layer ran

    # Nothing stays behind on the model: the next call runs every layer and scores exactly.
    for again, expected in zip(engine.score(jobs), full, strict=True):
        assert_same_scores(again, expected)


def test_a_pass_still_serving_a_live_job_runs_on_and_its_scores_are_exact(llama, jobs, full):
    engine = Engine(llama)
    with LayerCounter(engine, cancel_after=1, jobs={1}) as counter:
        got = engine.score_cancellable(jobs, counter.cancelled)
    assert got[1] is None
    assert counter.after_cancelling > 0
    for k in (0, 2):
        assert_same_scores(got[k], full[k])


def test_another_threads_passes_on_the_same_model_are_never_stopped(llama):
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = llama(ids).logits
    result: list[torch.Tensor] = []
    decoder = llama.get_decoder()
    with stop_between_layers(decoder, lambda job: True, [0]):
        other = threading.Thread(target=lambda: result.append(llama(ids).logits))
        other.start()
        other.join()
    torch.testing.assert_close(result[0], expected)


def test_a_model_without_transformers_decoder_layers_runs_unchecked():
    """Layers transformers did not build cannot be told from any other module: such a pass is not interrupted."""
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert decoder_layers(plain) == []
    finished = False
    with stop_between_layers(plain, lambda job: True, [0]):
        plain(torch.ones(1, 2))
        finished = True
    assert finished


@pytest.fixture(autouse=True)
def no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield
