"""The OpenRLHF helpers on its `Experience` tensor contract (OpenRLHF itself imports only with CUDA's flash-attn).

Experience: `sequences` (B, S) prompt + response, right-padded; `action_mask` (B, S - 1), where
action position j is sequence token j + 1; `advantages` (B, S - 1).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode, pad
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.batch import score_token_batch
from ccapo_adapters.openrlhf import experience_weights, weight_experience


def experience(tokenizer, observation: list[int] | None = None):
    """Two rows of prompt + response; with `observation`, row 0's response has an environment turn inside it."""
    prompts, responses = encode(tokenizer, PROMPTS), encode(tokenizer, COMPLETIONS, eos=True)
    rows, actions = [], []
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        half = len(response) // 2
        turns = [(response[:half], 1), (observation, 0), (response[half:], 1)] if observation and row == 0 else [
            (response, 1)
        ]
        sequence, action = list(prompt), [0] * len(prompt)
        for ids, is_action in turns:
            sequence += ids
            action += [is_action] * len(ids)
        rows.append(sequence)
        actions.append(action)
    sequences, attention = pad(rows, tokenizer.pad_token_id, "right")
    action_mask = pad(actions, 0, "right")[0][:, 1:].bool()  # action j is sequence token j + 1
    advantages = torch.tensor([[2.0], [-1.0]]).expand(action_mask.shape).clone()
    exp = SimpleNamespace(
        sequences=sequences, attention_mask=attention, action_mask=action_mask, advantages=advantages, info={}
    )
    return exp, (prompts, responses)


def test_weights_align_with_the_action_grid(tokenizer, scorer):
    exp, rows = experience(tokenizer)
    provider = WeightProvider(CounterfactualConfig(), scorer)
    before = exp.advantages.clone()
    metrics = weight_experience(exp, provider, step=1)
    reference = score_token_batch(scorer, *rows)
    weights = exp.advantages / before
    for row, response in enumerate(rows[1]):
        on_actions = weights[row][exp.action_mask[row]]
        assert on_actions.tolist() == pytest.approx(reference.weights[row, : len(response)].tolist(), rel=1e-5)
    torch.testing.assert_close(exp.advantages[~exp.action_mask], before[~exp.action_mask])
    assert exp.info["ccapo_weight_mean"].shape == (2,)
    assert metrics["ccapo/weights/scored_share"] == 1.0


def test_observation_tokens_are_scored_but_not_weighted(tokenizer, scorer):
    observation = encode(tokenizer, [" (calculator says: 24)"])[0]
    exp, _ = experience(tokenizer, observation)
    provider = WeightProvider(CounterfactualConfig(), scorer)
    batch = experience_weights(exp.sequences, exp.attention_mask, exp.action_mask, provider)
    assert batch.results[0].status == "ok"
    # The scored completion is the whole span from the first to the last action, observation included.
    assert len(batch.results[0].token_weights) == int(exp.action_mask[0].sum()) + len(observation)
    before = exp.advantages.clone()
    weight_experience(exp, provider)
    assert torch.equal(exp.advantages[0][~exp.action_mask[0]], before[0][~exp.action_mask[0]])


def test_a_row_without_actions_stays_uniform(tokenizer, scorer):
    exp, _ = experience(tokenizer)
    exp.action_mask[1] = False
    provider = WeightProvider(CounterfactualConfig(), scorer)
    batch = experience_weights(exp.sequences, exp.attention_mask, exp.action_mask, provider)
    assert torch.all(batch.weights[1] == 1.0) and batch.errors[1] is None
    with pytest.raises(ValueError, match="S - 1"):
        experience_weights(exp.sequences, exp.attention_mask, exp.action_mask[:, :-1], None)
