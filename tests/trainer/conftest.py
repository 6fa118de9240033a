"""A tiny word-level policy for trainer tests: random init, but its 25-word vocabulary makes "####"
answers, sentences and calculations common in its samples, so rewards vary within a group and the
counterfactual scorer has spans to probe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ccapo_trainer.config import TrainConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from word_policy import CHAT_TEMPLATE, WORDS


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("word-llama")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture
def train_config(word_model_dir: Path, tmp_path: Path):
    """A config for the word model: 2 prompts x 4 samples, 20 new tokens, sentence spans.

    `counterfactual` settings are merged into the section's (which scores sentence spans)."""

    def make(*, counterfactual: dict | None = None, **overrides) -> TrainConfig:
        section = {"scoring": {"segmenter": "sentence", "min_span_tokens": 2}, **(counterfactual or {})}
        settings = dict(
            model=str(word_model_dir),
            prompts_per_step=2,
            num_generations=4,
            max_completion_length=20,
            temperature=1.0,
            top_p=1.0,
            steps=1,
            learning_rate=1e-3,
            micro_batch_size=8,
            rewards=["mentions_answer"],
            counterfactual=section,
            output_dir=str(tmp_path / "run"),
        )
        settings.update(overrides)
        return TrainConfig.model_validate(settings)

    return make
