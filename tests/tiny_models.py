"""Tiny random-init models of real architectures (Llama, Qwen2), for tests and their helpers.

A module of its own, not conftest.py: several test folders have a conftest, and `from conftest
import ...` reaches whichever pytest imported first.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)


def tiny_model(kind: str, vocab_size: int, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **TINY))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab_size, **TINY))
    else:
        raise ValueError(kind)
    return model.eval()
