"""GSM-style traces as token ids, padded the ways RL frameworks pad them."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

PROMPTS = [
    "Q: A box holds 6 apples. Mia has 4 boxes and eats 3 apples. How many are left?\nA:",
    "Q: What is 4 * 6 - 3?\nA:",
]
# Both have an answer marker and a calculation: the default ("calc") segmenter finds spans to probe.
COMPLETIONS = [
    "Each box holds 6 apples, so 4 boxes hold 4 * 6 = 24 apples. She eats 3 of them, so 24 - 3 = 21 remain.\n#### 21",
    "First multiply the numbers carefully and then subtract. 4 * 6 = 24 and 24 - 3 = 21.\n#### 21",
]
NO_MARKER = "I am not sure how to solve this one, so I will stop here."


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], eos: bool = False) -> list[list[int]]:
    tail = [tokenizer.eos_token_id] if eos else []
    return [tokenizer(text, add_special_tokens=False).input_ids + tail for text in texts]


def pad(rows: list[list[int]], value: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, padded on the left (TRL's prompts) or the right (completions)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols] = torch.tensor(row)
        mask[i, cols] = 1
    return ids, mask
