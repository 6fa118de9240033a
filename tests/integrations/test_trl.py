"""`CounterfactualGRPOTrainer` against the real TRL on CPU, with the tiny llama and a two-prompt dataset.

Completions come from TRL's `rollout_func` hook as fixed GSM-style token ids: a random model's own
samples never contain an answer marker, and the weights must be real ones for the tests to mean
anything. Everything after generation (rewards, advantages, loss, optimizer) is TRL's.
"""

from __future__ import annotations

import os

import httpx
import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode
from datasets import Dataset
from live_server import start_server
from slow_swaps import slow_sync_config, wait_until_live
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.batch import apply_token_weights
from ccapo_adapters.trl import CounterfactualGRPOTrainer, check_trl_version
from trl import GRPOConfig, GRPOTrainer

GROUP = 2  # completions per prompt
SMALL_VOCAB = 512


def make_rollout(tokenizer, vocab_size: int | None = None):
    """Fixed completions; with `vocab_size`, ids folded into a smaller vocabulary (text no longer matters)."""
    fold = (lambda rows: [[i % vocab_size for i in row] for row in rows]) if vocab_size else (lambda rows: rows)
    completions = fold(encode(tokenizer, COMPLETIONS, eos=True))

    def rollout(prompts, trainer):
        prompt_ids = fold(encode(tokenizer, [PROMPTS[i % len(PROMPTS)] for i in range(len(prompts))]))
        completion_ids = [completions[i % len(completions)] for i in range(len(prompts))]
        logprobs = [[0.0] * len(ids) for ids in completion_ids]  # only read with vLLM importance sampling
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    return rollout


def reward(completions, **kwargs):
    """Unequal rewards inside each group, so every advantage is nonzero."""
    return [float(len(c) % 7) for c in completions]


def make_trainer(
    model_dir,
    tokenizer,
    tmp_path,
    cls=CounterfactualGRPOTrainer,
    prompts=2,
    vocab_size=None,
    reward_funcs=reward,
    rollout_func=None,
    **kwargs,
):
    """A trainer whose batches hold `prompts` prompts x GROUP completions (fewer: cheaper steps)."""
    loss_type = kwargs.pop("loss_type", "dapo")
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=prompts * GROUP,
        num_generations=GROUP,
        max_steps=2,
        max_completion_length=64,
        loss_type=loss_type,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=False,
    )
    torch.manual_seed(0)
    return cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
        rollout_func=rollout_func or make_rollout(tokenizer, vocab_size),
        **kwargs,
    )


def generation_batch(trainer):
    """One generation batch as TRL builds it in training: rewards, advantages (and, here, weights)."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); compute_loss reads it
    return trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(GROUP)])


def hidden_grad(trainer, inputs):
    """d loss / d final hidden state at the position that predicts each completion token: (B, T, H).

    TRL's fused LM head never materializes logits; the head works position by position, so the
    gradient at the position predicting token t is token t's alone.
    """
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["hidden"] = output

    hook = trainer.model.model.norm.register_forward_hook(keep)
    try:
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, inputs).backward()
    finally:
        hook.remove()
    start, width = inputs["prompt_ids"].shape[1] - 1, inputs["completion_ids"].shape[1]
    return captured["hidden"].grad[:, start : start + width]


def test_a_reference_target_is_refused_at_construction(tiny_model_dir, tokenizer, tmp_path):
    config = CounterfactualConfig(scoring={"target": "reference"})
    with pytest.raises(ValueError, match="reference answer"):
        make_trainer(tiny_model_dir, tokenizer, tmp_path, counterfactual=config)


def test_version_range_is_checked():
    check_trl_version("1.16.0")
    for version in ("0.29.1", "2.0.0"):
        with pytest.raises(ImportError, match=r"trl>=1\.0\.0,<2\.0\.0"):
            check_trl_version(version)


@pytest.mark.parametrize("weighting", ["counterfactual", "inverted", "random", "uniform"])
def test_two_training_steps(weighting, tiny_model_dir, tokenizer, tmp_path):
    config = CounterfactualConfig(weighting=weighting)
    trainer = make_trainer(tiny_model_dir, tokenizer, tmp_path, prompts=1, counterfactual=config)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2
    for log in steps:
        assert log["ccapo/weights/failed"] == 0
        if weighting == "uniform":
            assert log["ccapo/weights/mean"] == 1.0 and log["ccapo/weights/scored_share"] == 0.0
        else:
            assert log["ccapo/weights/scored_share"] == 1.0
            assert log["ccapo/weights/std"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_rows_with_zero_advantage_are_not_scored(tiny_model_dir, tokenizer, tmp_path):
    def equal_in_the_first_group(completions, **kwargs):
        return [0.0 if i < GROUP else float(i) for i in range(len(completions))]

    def distinct_rows(prompts, trainer):  # make_rollout repeats rows, which are scored once anyway
        prompt_ids = encode(tokenizer, [PROMPTS[i % len(PROMPTS)] for i in range(len(prompts))])
        completion_ids = encode(tokenizer, [COMPLETIONS[i // GROUP % len(COMPLETIONS)] for i in range(len(prompts))])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": [[0.0] * len(c) for c in completion_ids],
        }

    trainer = make_trainer(
        tiny_model_dir, tokenizer, tmp_path, reward_funcs=equal_in_the_first_group, rollout_func=distinct_rows
    )
    scorer, sent = trainer.weight_provider.scorer, []
    score = scorer.score
    scorer.score = lambda traces, config=None: sent.extend(traces) or score(traces, config)
    output = generation_batch(trainer)
    assert (output["advantages"] == 0).all(dim=1).tolist() == [True] * GROUP + [False] * GROUP
    assert len(sent) == GROUP and trainer._metrics["train"]["ccapo/weights/scored_traces"][-1] == GROUP
    ids, mask = output["completion_ids"], output["completion_mask"].bool()
    assert [list(t["completion_ids"]) for t in sent] == [ids[r][mask[r]].tolist() for r in range(GROUP, 2 * GROUP)]


def test_uniform_weights_reproduce_stock_grpo_loss(tiny_model_dir, tokenizer, tmp_path):
    losses = {}
    for name, cls, kwargs in (
        ("stock", GRPOTrainer, {}),
        ("uniform", CounterfactualGRPOTrainer, {"counterfactual": CounterfactualConfig(weighting="uniform")}),
        ("paper", CounterfactualGRPOTrainer, {"counterfactual": CounterfactualConfig(scheme="paper")}),
        ("normalized", CounterfactualGRPOTrainer, {}),
    ):
        trainer = make_trainer(tiny_model_dir, tokenizer, tmp_path / name, cls, **kwargs)
        losses[name] = trainer.compute_loss(trainer.model, generation_batch(trainer)).detach()
    torch.testing.assert_close(losses["uniform"], losses["stock"], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(losses["paper"], losses["stock"])  # the paper's weights average about 2-3
    # The default scheme's weights average 1 over each completion and the advantage is constant along
    # it, so at the rollout policy the loss value is the stock one; only its gradient moves (tested below).
    torch.testing.assert_close(losses["normalized"], losses["stock"], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def small_vocab_dir(tokenizer, tmp_path_factory) -> str:
    """A tiny llama with a 512-token vocabulary: TRL's LM head runs over every position, and 49k is slow on CPU."""
    path = tmp_path_factory.mktemp("small-vocab")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=SMALL_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_token_advantages_weight_each_tokens_gradient(small_vocab_dir, tokenizer, tmp_path):
    """For every token-level loss type, weighting a token's advantage weights that token's gradient."""
    uniform = CounterfactualConfig(weighting="uniform")
    trainer = make_trainer(small_vocab_dir, tokenizer, tmp_path, vocab_size=SMALL_VOCAB, counterfactual=uniform)
    inputs = generation_batch(trainer)
    assert inputs["advantages"].shape == inputs["completion_ids"].shape
    weights = torch.rand(inputs["advantages"].shape, generator=torch.Generator().manual_seed(0)) * 4
    weights[:, ::3] = 0.0
    weighted = dict(inputs, advantages=apply_token_weights(inputs["advantages"], weights))
    real = inputs["completion_mask"].bool()
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo"):
        trainer.loss_type = loss_type  # what _compute_loss reads; the rest of the setup is shared
        expected = (hidden_grad(trainer, inputs) * weights[..., None])[real]
        got = hidden_grad(trainer, weighted)[real]
        assert torch.all(got[weights[real] == 0] == 0), loss_type
        # Constant weights scale exactly; TRL's fused LM head adds ~0.5% noise when they vary by position.
        error = (got - expected).norm(dim=-1) / expected.norm(dim=-1).clamp(min=1e-12)
        assert error.max() < 0.02, loss_type


class ZeroReasoning:
    """The real scorer's results, with weight 0 on every reasoning token (before the answer)."""

    def __init__(self, scorer):
        self.scorer = scorer

    def score(self, traces, config=None):
        results = self.scorer.score(traces, config)
        for result in results:
            start = result.answer.token_start
            result.token_weights = [0.0] * start + list(result.token_weights[start:])
        return results


def test_zero_weight_reasoning_tokens_get_no_gradient(tiny_model_dir, tokenizer, tmp_path, scorer):
    provider = WeightProvider(CounterfactualConfig(), ZeroReasoning(scorer))
    trainer = make_trainer(tiny_model_dir, tokenizer, tmp_path, weight_provider=provider)
    inputs = generation_batch(trainer)
    grad = hidden_grad(trainer, inputs).abs().sum(-1)  # (B, T)
    for row, ids in enumerate(inputs["completion_ids"]):
        length = int(inputs["completion_mask"][row].sum())
        answer_start = next(t for t, token in enumerate(tokenizer.convert_ids_to_tokens(ids)) if "#" in token)
        assert answer_start > 10
        assert torch.all(grad[row, :answer_start] == 0)
        assert torch.all(grad[row, answer_start:length] > 0)


def test_remote_provider_syncs_the_policy_to_a_real_server(tiny_model_dir, tokenizer, tmp_path):
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(tmp_path)}  # the server may load what we save
    with start_server(tiny_model_dir, env=env) as url:
        first = httpx.get(f"{url}/v1/model").json()["version"]
        config = CounterfactualConfig(
            provider="remote", server_url=url, admin_key="admin", sync_every=1, sync_dir=str(tmp_path / "policy")
        )
        trainer = make_trainer(tiny_model_dir, tokenizer, tmp_path, prompts=1, counterfactual=config)
        trainer.train()
        last = httpx.get(f"{url}/v1/model").json()["version"]
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["ccapo/weights/scored_share"] for log in steps] == [1.0, 1.0]
    # Step 0 pushes the initial policy (the server may hold any model), step 1 the updated one, each before scoring.
    assert [log["ccapo/policy_lag_steps"] for log in steps] == [0.0, 0.0]
    assert trainer.weight_provider.synced_step == 1 and last != first
    assert (tmp_path / "policy" / "model.safetensors").exists()


def test_a_policy_load_slower_than_the_client_timeout_leaves_training_on_the_live_model(
    tiny_model_dir, tokenizer, tmp_path, slow_server
):
    """The step-0 push outlasts the client's read timeout: TRL trains on, scored by the server's live
    model, and the push counts once it is live (it once ended training with httpx.ReadTimeout)."""
    config = slow_sync_config(slow_server.url, slow_server.roots / "trl-policy", slow_server.client_timeout_s, 0.1)
    version = slow_server.version()
    trainer = make_trainer(tiny_model_dir, tokenizer, tmp_path, prompts=1, counterfactual=config)
    trainer.train()
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["ccapo/weights/scored_share"] for log in steps] == [1.0, 1.0]
    provider = trainer.weight_provider
    wait_until_live(provider)
    assert provider.synced_step in (0, 1) and int(slow_server.version()) > int(version)
