"""A small byte-level BPE tokenizer for the synthetic task, saved and reloaded like any HF tokenizer.

Digits stay single tokens (with or without a leading space) so the model does arithmetic digit by
digit; every word of the task becomes one token, so sequences stay short. Any other text still
encodes, byte by byte, and decoding round-trips it exactly, which the Scorer's character offsets
rely on.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ccapo_trainer.testbed.task import corpus

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
# One pre-token per digit, word, run of punctuation or whitespace character; a single space
# joins the token after it (" 7", " apples", " =").
_PIECES = Regex(r" ?[0-9]| ?[A-Za-z]+| ?[^\sA-Za-z0-9]+|\s")
# The question, then a newline where the solution starts; the system prompt is dropped to keep
# sequences short (a 1M-parameter model gains nothing from it).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def build_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train BPE on `texts` (default: the task's corpus) until every word in them is one token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(_PIECES, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus() if texts is None else texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        padding_side="left",  # generation pads on the left; training code pads as it needs
    )
