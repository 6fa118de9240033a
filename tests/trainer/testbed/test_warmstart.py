"""The smoke warm start: a loadable cached directory, reused on the second call; greedy evaluation."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from ccapo_trainer.evaluate import greedy_accuracy
from ccapo_trainer.testbed import (
    TaskConfig,
    WarmStartConfig,
    arith_problems,
    exact_reward,
    load_warm_start,
    warm_start,
)

TASK = TaskConfig(steps=(2, 3))


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    cache = tmp_path_factory.mktemp("testbed")
    return cache, warm_start(TASK, seed=0, cache_dir=cache, config=WarmStartConfig.smoke())


def test_smoke_warm_start_saves_a_loadable_model_and_its_settings(cached):
    cache, path = cached
    assert path.parent == cache
    model, tokenizer = load_warm_start(path)
    assert tokenizer.chat_template and tokenizer.pad_token == "<|pad|>"
    assert model.config.vocab_size == len(tokenizer)
    metadata = json.loads((path / "testbed.json").read_text())
    assert metadata["task"]["steps"] == [2, 3] and metadata["warm_start"]["train_steps"] == 20
    assert 0.0 <= metadata["eval_accuracy"] <= 1.0 and metadata["final_loss"] < 6.0  # below log(vocab)


def test_second_call_hits_the_cache_and_other_settings_do_not(cached):
    cache, path = cached
    started = time.perf_counter()
    assert warm_start(TASK, seed=0, cache_dir=cache, config=WarmStartConfig.smoke()) == path
    assert time.perf_counter() - started < 0.5
    other = dataclasses.replace(WarmStartConfig.smoke(), train_steps=1, eval_size=0)
    assert warm_start(TASK, seed=0, cache_dir=cache, config=other) != path


def test_greedy_evaluation_scores_what_it_generates(cached):
    model, tokenizer = load_warm_start(cached[1])
    problems = arith_problems(6, seed=0, config=TASK, split="test")
    result = greedy_accuracy(model, tokenizer, problems, max_new_tokens=24, batch_size=4, reward_fn=exact_reward)
    assert len(result.completions) == 6 and not any("<|" in c for c in result.completions)
    expected = sum(exact_reward(c, p.answer) for c, p in zip(result.completions, problems, strict=True))
    assert result.correct == expected and result.accuracy == expected / 6
    # left padding: a problem's completion does not depend on the batch it is in
    alone = greedy_accuracy(model, tokenizer, problems[:1], max_new_tokens=24, reward_fn=exact_reward)
    assert alone.completions == result.completions[:1]
    assert model.training is False
