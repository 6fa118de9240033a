"""Tokenizer (round-trip, chat template, save/reload), tiny model size, and the Scorer on a gold solution."""

from __future__ import annotations

import pytest
import torch
from ccapo_trainer.data import prompt_messages
from ccapo_trainer.testbed.model import tiny_model
from ccapo_trainer.testbed.task import FILLERS, arith_problems
from ccapo_trainer.testbed.tokenizer import build_tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import ccapo
from ccapo.spans import segment


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="module")
def problem():
    return arith_problems(1, seed=0, split="test")[0]


def _prompt_ids(tokenizer, problem) -> list[int]:
    return tokenizer.apply_chat_template(prompt_messages(problem), add_generation_prompt=True)["input_ids"]


def test_task_text_round_trips_and_stays_short(tokenizer):
    for p in arith_problems(50, seed=0):
        ids = tokenizer(p.solution, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == p.solution
        assert "".join(tokenizer.batch_decode([[i] for i in ids])) == p.solution  # per-token offsets line up
        assert len(ids) <= 60
    # digits stay single tokens, so the model does arithmetic digit by digit
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("93 + 4 = 97").input_ids)
    assert tokens == ["9", "3", "Ġ+", "Ġ4", "Ġ=", "Ġ9", "7"]


def test_any_text_round_trips(tokenizer):
    text = "Zoë paid €3.50 — naïve 東京 {braces}\t\n  double  spaces"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_chat_template_is_compact_and_ends_where_the_solution_starts(tokenizer, problem):
    text = tokenizer.apply_chat_template(prompt_messages(problem), tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|bos|>" + problem.question) and text.endswith("\n")
    assert "careful math tutor" not in text  # the system prompt is dropped
    assert len(_prompt_ids(tokenizer, problem)) <= 80


def test_save_and_reload(tokenizer, problem, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, PreTrainedTokenizerFast)
    assert _prompt_ids(reloaded, problem) == _prompt_ids(tokenizer, problem)
    assert reloaded(problem.solution).input_ids == tokenizer(problem.solution).input_ids
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert reloaded.padding_side == "left"


def test_building_twice_gives_the_same_vocabulary(tokenizer):
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_tiny_model_is_about_a_million_parameters_and_seeded(tokenizer):
    model = tiny_model(tokenizer, seed=0)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    assert model.config.vocab_size == len(tokenizer) and model.config.tie_word_embeddings
    again, other = tiny_model(tokenizer, seed=0), tiny_model(tokenizer, seed=1)
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight, again.get_input_embeddings().weight)
    assert not torch.equal(weight, other.get_input_embeddings().weight)


def test_scorer_finds_the_calc_lines_and_the_answer_of_a_gold_solution(tokenizer):
    problem = next(p for p in arith_problems(20, seed=0) if p.solution.count("\n") >= 4)
    model = tiny_model(tokenizer, seed=0)
    completion_ids = [*tokenizer(problem.solution, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    trace = {"prompt_ids": _prompt_ids(tokenizer, problem), "completion_ids": completion_ids}
    [result] = ccapo.Scorer(model, tokenizer).score([trace])
    assert result.status == "ok", result.reason
    calcs = [s.text.strip() for s in result.spans if s.kind == "calc"]
    lines = problem.solution.splitlines()
    assert calcs == [line for line in lines[:-1] if line not in FILLERS]
    assert len(result.token_weights) == len(completion_ids)


def test_line_segmenter_gives_one_span_per_reasoning_line(tokenizer, problem):
    encoded = tokenizer(problem.solution, add_special_tokens=False, return_offsets_mapping=True)
    reasoning = problem.solution.rindex("####")
    reasoning_tokens = next(i for i, (start, _) in enumerate(encoded.offset_mapping) if start >= reasoning)
    spans = segment(problem.solution, encoded.offset_mapping, reasoning_tokens, "line")
    texts = [problem.solution[s.start : s.end].strip() for s in spans]
    assert texts == problem.solution.splitlines()[:-1]
