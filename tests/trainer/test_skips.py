"""Scoring only what the loss reads: rows whose weights the loss never uses and repeats of an identical
trace are not scored, each skip is counted, and the loss, gradients and update stay those of the
run that scores every row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ccapo_adapters import batch as batch_module
from ccapo_trainer.components import build_components
from ccapo_trainer.loop import Trainer
from ccapo_trainer.loss import LossConfig, policy_loss
from ccapo_trainer.metrics import read_metrics
from ccapo_trainer.rewards import WeightedRewards
from ccapo_trainer.stages import weighting as weighting_stage
from ccapo_trainer.stages.batch import StepBatch
from ccapo_trainer.stages.weighting import token_weights, unused_weight_rows
from safetensors.torch import load_file
from word_policy import PROBLEMS, REWARDS, WORDS

from ccapo import Scorer

SKIP_COUNTS = tuple(f"ccapo/weights/skipped_{why}" for why in ("nonpositive", "zero_advantage", "duplicates"))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"weight_positive_only": True},
        {"beta": 0.1, "weight_kl": False},
        {"beta": 0.1, "weight_kl": True, "weight_positive_only": True},
        {"beta": 0.1, "weight_kl": True},  # the weighted KL reads every row's weights: only <= 0 rows could go
        {"loss_type": "grpo", "weight_positive_only": True},
        {"loss_type": "dr_grpo", "max_completion_length": 6},
    ],
)
def test_the_rows_left_unscored_change_neither_loss_nor_gradients(settings):
    config = LossConfig(**settings)
    generator = torch.Generator().manual_seed(0)
    advantages = torch.tensor([1.0, -0.5, 0.0, 0.0, 0.7, -1.2, 0.0, 0.3])
    shape = (8, 6)
    logprobs = -torch.rand(shape, generator=generator) - 0.1
    old = logprobs + 0.3 * torch.randn(shape, generator=generator)  # ratios inside and outside the clip range
    ref = logprobs + 0.2 * torch.randn(shape, generator=generator)
    mask = (torch.rand(shape, generator=generator) > 0.2).long()
    scored = 0.2 + 3 * torch.rand(shape, generator=generator)  # what the scorer would give every row

    nonpositive, zero = unused_weight_rows(advantages, config)
    unscored = nonpositive | zero
    uniform = torch.where(unscored[:, None], torch.ones_like(scored), scored)

    def loss_and_grad(weights):
        x = logprobs.clone().requires_grad_(True)
        loss = policy_loss(x, old, advantages, mask, config, weights, ref if config.beta else None).loss
        loss.backward()
        return loss.detach(), x.grad

    loss, grad = loss_and_grad(scored)
    skipped_loss, skipped_grad = loss_and_grad(uniform)
    assert torch.equal(loss, skipped_loss) and torch.equal(grad, skipped_grad)  # bit for bit

    if config.weight_positive_only:
        assert nonpositive.tolist() == (advantages <= 0).tolist() and not zero.any()
    elif config.beta and config.weight_kl:
        assert not unscored.any()
        # ... and rightly so: uniform weights on the zero-advantage rows would change the loss
        changed = torch.where((advantages == 0)[:, None], torch.ones_like(scored), scored)
        assert not torch.equal(loss_and_grad(changed)[0], loss)
    else:
        assert zero.tolist() == (advantages == 0).tolist() and not nonpositive.any()


@pytest.fixture
def scoring_run(train_config):
    """The word policy scoring in-process; every row scored against its reference answer."""
    config = train_config(
        counterfactual={
            "weighting": "counterfactual",
            "scoring": {"segmenter": "sentence", "min_span_tokens": 2, "target": "reference"},
        }
    )
    return build_components(config, PROBLEMS, WeightedRewards([REWARDS["mentions_answer"]], [1.0]), checkpoint=None)


def ids(text: str) -> list[int]:
    return [WORDS.index(word) for word in text.split()]


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    tensor = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(tensor)
    for r, row in enumerate(rows):
        tensor[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
    return tensor, mask


def test_identical_completions_are_scored_once_and_share_the_result(scoring_run, monkeypatch):
    prompt = ids("what is 3 + 4 ? .")
    first = ids("we add 3 + 4 = 7 . so the answer is 7 . #### 7 <eos>")
    second = ids("3 + 4 is 7 . the answer is 7 . #### 7 <eos>")
    completions = [first, second, first, first, second]
    completion_ids, mask = padded(completions)
    sent = []
    score = scoring_run.provider.scorer.score
    monkeypatch.setattr(
        scoring_run.provider.scorer, "score", lambda traces, config: sent.append(traces) or score(traces, config)
    )

    scored = scoring_run.provider.weights(
        [prompt] * 5, completion_ids, completion_mask=mask, reference_answers=["7"] * 5
    )
    assert [len(traces) for traces in sent] == [2]
    assert scored.traces == 2 and scored.duplicates == 3
    metrics = scored.metrics(mask)
    assert metrics["weights/scored_traces"] == 2 and metrics["weights/skipped_duplicates"] == 3  # BatchWeights' own
    assert metrics["weights/scored_share"] == 1.0  # duplicates carry their twin's weights
    assert scored.results[2] is scored.results[0] and scored.results[4] is scored.results[1]
    assert torch.equal(scored.weights[2], scored.weights[0]) and torch.equal(scored.weights[4], scored.weights[1])

    # The same weights as scoring each completion on its own.
    for row, completion in enumerate(completions):
        alone = scoring_run.provider.weights([prompt], [completion], reference_answers=["7"])
        assert alone.results[0].status == "ok"
        torch.testing.assert_close(scored.weights[row, : len(completion)], alone.weights[0], atol=1e-5, rtol=1e-5)


def test_the_weighting_stage_skips_rows_by_advantage(scoring_run, monkeypatch):
    prompt = ids("what is 3 + 4 ? .")
    rows = [
        ids("we add 3 + 4 = 7 . so the answer is 7 . #### 7 <eos>"),
        ids("3 + 4 is 7 . #### 7 <eos>"),
        ids("we add 3 . the answer is 8 . #### 8 <eos>"),
        ids("so 4 + 3 = 7 . #### 7 <eos>"),
    ]
    completion_ids, mask = padded(rows)
    advantages = torch.tensor([0.9, -0.4, 0.0, 0.5])
    batch = StepBatch([prompt] * 4, completion_ids, mask, mask.clone(), advantages, ["7"] * 4)
    scoring_run.config = scoring_run.config.model_copy(update={"weight_positive_only": True})

    weights = token_weights(scoring_run, batch)
    assert weights.traces == 2 and [r is not None for r in weights.results] == [True, False, False, True]
    assert torch.equal(weights.weights[[1, 2]], torch.ones_like(weights.weights[[1, 2]]))
    record = weighting_stage.weighting_metrics(scoring_run, weights, batch, step=1)
    assert record["ccapo/weights/skipped_nonpositive"] == 2 and record["ccapo/weights/skipped_zero_advantage"] == 0
    assert record["ccapo/weights/scored_traces"] == 2


def score_every_row(monkeypatch):
    """The reference the skips replace: every row scored, duplicates included."""
    monkeypatch.setattr(
        weighting_stage,
        "unused_weight_rows",
        lambda advantages, loss: (torch.zeros_like(advantages, dtype=torch.bool),) * 2,
    )
    monkeypatch.setattr(
        batch_module, "_distinct_rows", lambda prompts, completions, answers, skip: (list(range(len(completions))), {})
    )


def test_a_run_with_skips_takes_the_step_of_a_run_scoring_every_row(train_config, tmp_path, monkeypatch):
    settings = dict(
        dynamic_sampling=False,
        weight_positive_only=True,
        # every row scorable (the reference answer is scored), so the skipped rows would have had weights
        counterfactual={
            "weighting": "counterfactual",
            "scheme": "paper",
            "scoring": {"segmenter": "sentence", "min_span_tokens": 2, "target": "reference"},
        },
    )
    results = {}
    for arm in ("skips", "every_row"):
        with monkeypatch.context() as patch:
            if arm == "every_row":
                score_every_row(patch)
            config = train_config(output_dir=str(tmp_path / arm), **settings)
            Trainer(config, train_problems=PROBLEMS, reward_fns=REWARDS).train()
        [record] = read_metrics(config.output_dir)
        weights = load_file(Path(config.output_dir) / "checkpoints" / "step-1" / "model" / "model.safetensors")
        results[arm] = record, weights
    (skipping, skipped_weights), (every, every_weights) = results["skips"], results["every_row"]

    rows = 8
    assert every["ccapo/weights/scored_traces"] == rows and all(every[key] == 0 for key in SKIP_COUNTS)
    assert every["ccapo/weights/scored_share"] == 1.0 and skipping["ccapo/weights/scored_share"] < 1.0
    assert skipping["ccapo/weights/skipped_nonpositive"] >= 1  # a group's mean-centred advantages are not all positive
    assert skipping["ccapo/weights/scored_traces"] + sum(skipping[key] for key in SKIP_COUNTS) == rows
    assert skipping["ccapo/weights/scored_traces"] < rows
    assert skipping["loss"] == pytest.approx(every["loss"], abs=1e-6)
    assert skipping["grad_norm"] == pytest.approx(every["grad_norm"], rel=1e-5)
    # Adam's first step moves each element by lr * g / (|g| + eps): where |g| is near eps, the roundoff of a
    # different batch composition (the engine chunks rows by how many share a pass) moves it by up to ~lr.
    # Everywhere else the step is the same, so at most one element in a thousand of a tensor may differ.
    for name, value in every_weights.items():
        differ = ~torch.isclose(skipped_weights[name], value, atol=1e-6, rtol=1e-5)
        assert int(differ.sum()) <= max(1, value.numel() // 1000), name


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_groups_without_a_signal_are_not_scored_unless_the_kl_term_reads_their_weights(train_config, monkeypatch, beta):
    def broken(self, jobs, progress=None):
        raise RuntimeError("scored a trace")

    monkeypatch.setattr(Scorer, "compute", broken)
    problems = [p.__class__(p.question, "no such answer") for p in PROBLEMS]  # every reward 0
    config = train_config(counterfactual={"weighting": "counterfactual"}, dynamic_sampling=False, beta=beta)
    Trainer(config, train_problems=problems, reward_fns=REWARDS).train()
    [record] = read_metrics(config.output_dir)
    if beta == 0:
        assert record["ccapo/weights/skipped_zero_advantage"] == 8 and record["ccapo/weights/scored_traces"] == 0
        assert record["ccapo/weights/failed"] == 0 and record["loss"] == 0.0
    else:  # the weighted KL term reads them: scored (and here the scorer fails, so it is counted)
        assert record["ccapo/weights/skipped_zero_advantage"] == 0 and record["ccapo/weights/scored_traces"] > 0
        assert record["ccapo/weights/failed"] == 8
