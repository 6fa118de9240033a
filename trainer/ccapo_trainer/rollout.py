"""Rollouts: G sampled completions per prompt (HF `generate`, or vLLM), and their per-token log-probs.

Prompts travel as unpadded id lists and are left-padded per batch; completions come back as a
right-padded `(N, T)` tensor whose mask covers each completion up to and including its stop token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    batch_size: int = 64  # sequences per generate() call


@dataclass
class Completions:
    """`ids` (N, T) right-padded; `mask` 1 on tokens up to and including the stop token; `truncated`:
    the sample hit `max_new_tokens` without stopping."""

    ids: torch.Tensor
    mask: torch.Tensor
    truncated: torch.Tensor


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS and the chat template's end-of-turn tokens: any of them ends a completion."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None})


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]], sampling: Sampling
) -> Completions:
    """One completion per prompt id list (repeat a prompt G times for a group), in order."""
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    was_training = model.training
    model.eval()  # no dropout while sampling, and a KV cache even under gradient checkpointing
    chunks = []
    try:
        for start in range(0, len(prompts), sampling.batch_size):
            ids, mask = left_pad(prompts[start : start + sampling.batch_size], pad_id, model.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.do_sample,
                temperature=sampling.temperature if sampling.do_sample else None,
                top_p=sampling.top_p if sampling.do_sample else None,
                top_k=None,
                eos_token_id=stops,
                pad_token_id=pad_id,
                use_cache=True,
            )
            chunks.append(out[:, ids.shape[1] :].cpu())
    finally:
        model.train(was_training)
    width = max(chunk.shape[1] for chunk in chunks)
    completion_ids = torch.cat([pad_right(chunk, width, pad_id) for chunk in chunks])
    return completions_from_ids(completion_ids, stops, pad_id, sampling.max_new_tokens)


def completions_from_ids(ids: torch.Tensor, stops: Sequence[int], pad_id: int, max_new_tokens: int) -> Completions:
    """Masks from raw generated ids: everything after the first stop token is padding."""
    is_stop = torch.isin(ids, torch.tensor(list(stops)))
    seen_stop = is_stop.cumsum(-1)
    after = (seen_stop - is_stop.long()) > 0  # strictly after the first stop token
    mask = (~after).long()
    ids = ids.masked_fill(after, pad_id)
    truncated = ~is_stop.any(-1) & (mask.sum(-1) >= max_new_tokens)
    return Completions(ids, mask, truncated)


def decode(tokenizer: PreTrainedTokenizerBase, completions: Completions) -> list[str]:
    """Completion texts without the stop token and padding."""
    rows = [row[mask.bool()].tolist() for row, mask in zip(completions.ids, completions.mask, strict=True)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def pad_right(ids: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    if ids.shape[1] == width:
        return ids
    return torch.cat([ids, ids.new_full((ids.shape[0], width - ids.shape[1]), pad_id)], dim=1)


def completion_logprobs(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of each completion token under the policy at `temperature`, and optionally the
    per-token entropy. Runs with whatever grad mode the caller set."""
    device = model.device
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    ids = torch.cat([prompt_ids, completion_ids.to(device)], dim=1)
    attention = torch.cat([prompt_mask, completion_mask.to(device)], dim=1)
    # Left padding shifts every prompt: positions count real tokens only, as generate() counted them.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    width = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=width + 1).logits
    logits = logits[:, :-1].float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, completion_ids.to(device)[..., None])[..., 0] - log_norm
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = log_norm - (probs * logits).sum(-1)
    return logprobs, entropy


def chunked(total: int, size: int) -> list[slice]:
    return [slice(k * size, min((k + 1) * size, total)) for k in range(math.ceil(total / size))]
