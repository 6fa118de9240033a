"""The batch stage: a step's kept groups as one padded batch, with their advantages."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccapo_trainer.advantages import group_advantages
from ccapo_trainer.config import TrainConfig
from ccapo_trainer.rollout import pad_right
from ccapo_trainer.stages.collect import Group


@dataclass
class StepBatch:
    """Row i is a completion of `prompts[i]`; each group's G rows are adjacent."""

    prompts: list[list[int]]
    ids: torch.Tensor  # (B, T) completion ids, right-padded
    mask: torch.Tensor  # (B, T) 1 on completion tokens
    loss_mask: torch.Tensor  # (B, T) the tokens the loss counts (`mask_truncated_completions` drops unfinished rows)
    advantages: torch.Tensor  # (B,)
    answers: list[str]  # each row's reference answer


def assemble(groups: list[Group], config: TrainConfig, pad_id: int) -> StepBatch:
    g = config.num_generations
    width = max(group.ids.shape[1] for group in groups)
    mask = torch.cat([pad_right(group.mask, width, 0) for group in groups])
    loss_mask = mask.clone()
    if config.mask_truncated_completions:
        loss_mask[torch.cat([group.truncated for group in groups])] = 0
    rewards = torch.cat([group.rewards for group in groups])
    return StepBatch(
        prompts=[group.prompt for group in groups for _ in range(g)],
        ids=torch.cat([pad_right(group.ids, width, pad_id) for group in groups]),
        mask=mask,
        loss_mask=loss_mask,
        advantages=group_advantages(rewards, g, config.scale_rewards),
        answers=[group.problem.answer for group in groups for _ in range(g)],
    )
