"""Tiny random-init models of real architectures (Llama, Qwen2), and a small real tokenizer, for tests
and their helpers.

The tokenizer is SmolLM2's kind with a vocabulary 48 times smaller (1024 tokens): a byte-level BPE
(any text encodes and decodes back exactly, with character offsets) that splits digits as SmolLM2's
does, with its special tokens and chat template, trained here on a few kilobytes of GSM-style text.
With 49k tokens the LM head and the full-vocabulary log-softmax were most of every tiny model's
cost; tests where SmolLM2's own tokenization is the point use the real one (`smollm_tokenizer` in
tests/conftest.py).

A module of its own, not conftest.py: several test folders have a conftest, and `from conftest
import ...` reaches whichever pytest imported first.
"""

from __future__ import annotations

import itertools
import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from ccapo.examples import load_examples
from ccapo.gsm import FILLERS, SYSTEM_PROMPT

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)

# SmolLM2-Instruct's special tokens and chat template (its tokenizer_config.json and chat_template.jinja).
SPECIAL_TOKENS = {"unk_token": "<|endoftext|>", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# What the tests score: word problems, worked solutions with "####" answers, a little plain prose.
_CORPUS = (
    "Let me think about the boxes. Each box holds 12, so 11 × 12 = 132 muffins.\n#### 132",
    "We have 3 + 4 = 7 apples in the basket now.\nDoubling gives 7 × 2 = 14 apples.\n#### 14",
    "First, 3 + 4 = 7 apples.\nThen 7 × 2 = 14 apples.\nI will check the work once.\nSo 14 - 5 = 9.\n#### 9",
    "How many apples are there? What is the total? How much change does she get, in dollars?",
    "The answer is the number of items in the store. So the total is 160-48=112 emails per day.",
    "Step by step: the first step, the second step, then the final answer. The cost of the pens and the "
    "notebooks is the sum of the prices. There are more of them than there were at the start of the week.",
    " ".join(a + b for a, b in itertools.product(string.ascii_lowercase, repeat=2)),  # fills the vocabulary
)


def small_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE like SmolLM2's, trained in milliseconds on a fixed corpus (the same every run)."""
    texts = [*_CORPUS, SYSTEM_PROMPT, *FILLERS]
    for trace in load_examples():
        texts += [str(trace.prompt), str(trace.completion)]
    tokenizer = Tokenizer(models.BPE())
    digits = pre_tokenizers.Digits(individual_digits=True)  # one token per digit, never joined to a space
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [digits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=SPECIAL_TOKENS["eos_token"],  # as SmolLM2's: padding is end-of-turn
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
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
