"""Group-relative advantages (GRPO, Dr. GRPO) and the zero-variance groups dynamic sampling drops."""

from __future__ import annotations

from typing import Literal

import torch

ScaleRewards = Literal["group", "batch", "none"]


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: ScaleRewards = "group", eps: float = 1e-4
) -> torch.Tensor:
    """A_i = R_i - mean(group), divided by the group's std ("group", GRPO), the batch's ("batch"),
    or nothing ("none", Dr. GRPO). `rewards` is (N,) with each group's G samples adjacent."""
    grouped = _grouped(rewards, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale_rewards == "batch":
        centered = centered / (rewards.std() + eps)
    elif scale_rewards != "none":
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}: use 'group', 'batch' or 'none'")
    return centered.reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N / G,) bool: groups whose rewards are all equal, which carry no learning signal."""
    grouped = _grouped(rewards, group_size)
    return (grouped == grouped[:, :1]).all(dim=1)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size).to(torch.float32)
