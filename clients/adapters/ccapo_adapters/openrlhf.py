"""OpenRLHF: per-token multipliers for the advantages its experience maker computes.

An OpenRLHF `Experience` holds `sequences` (B, S): prompt and response ids in one row, right-padded;
`attention_mask` (B, S); and `action_mask` (B, S - 1), where action position j is the token at
sequence position j + 1 (log-probs are shifted by one). Multi-turn rollouts mark several action
ranges with observation tokens between them. `experience_weights` scores each row from its first
to its last action token (observations included: the ids the policy saw) and returns weights on
the action grid; `weight_experience` multiplies `experience.advantages` by them. OpenRLHF's
`PolicyLoss` (PPO clip, dual clip) is linear in the per-token advantage, so this weights each
token's loss.

`CounterfactualAdvantages` is the mixin for OpenRLHF's `RemoteExperienceMaker`: after its
`compute_advantages_and_returns` (baselines, GAE or REINFORCE returns, whitening), every
experience's advantages are weighted. `ccapo_adapters.openrlhf_trainer` installs it where
OpenRLHF's PPO trainer builds its experience maker. Nothing here imports OpenRLHF.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ccapo_adapters.batch import BatchWeights, apply_token_weights
from ccapo_adapters.provider import WeightProvider, provider_from_settings

# The settings of the provider (CounterfactualConfig's fields, JSON), for the experience maker that
# OpenRLHF builds inside its PPO trainer's Ray actor: the entry point puts them in Ray's runtime env.
SETTINGS_ENV = "CCAPO_ADAPTER_SETTINGS"


def experience_weights(
    sequences: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor, provider: WeightProvider
) -> BatchWeights:
    """(B, S - 1) weights on OpenRLHF's action grid (1.0 off the actions and on rows without any)."""
    if action_mask.shape != (sequences.shape[0], sequences.shape[1] - 1):
        raise ValueError(
            f"action_mask {tuple(action_mask.shape)} must be (B, S - 1) for sequences {tuple(sequences.shape)}"
        )
    actions = action_mask.to(torch.bool).cpu()
    real = attention_mask.to(torch.bool).cpu()
    positions = torch.arange(actions.shape[1])
    prompts, scored = [], torch.zeros_like(actions)
    for row, mask in enumerate(actions):
        taken = positions[mask]
        if taken.numel() == 0:  # nothing to weight; an empty completion is left uniform by the scorer
            prompts.append(sequences[row][real[row]].tolist())
            continue
        first, last = int(taken[0]), int(taken[-1])
        prompts.append(sequences[row, : first + 1][real[row, : first + 1]].tolist())
        scored[row, first : last + 1] = real[row, first + 1 : last + 2]
    return provider.weights(prompts, sequences[:, 1:], completion_mask=scored)


def weight_experience(experience: Any, provider: WeightProvider, step: int | None = None) -> dict[str, float]:
    """Multiply `experience.advantages` (B, S - 1) by counterfactual weights on its action tokens.

    Per-sample weight means go to `experience.info["ccapo_weight_mean"]` (OpenRLHF logs `info`
    per sample); the batch's statistics are returned, keyed "ccapo/...".
    """
    batch = experience_weights(experience.sequences, experience.attention_mask, experience.action_mask, provider)
    if (batch.weights < 0).any():
        raise ValueError("negative token weights would flip the clipped loss: keep the weight bounds at or above 0")
    mask = experience.action_mask
    experience.advantages = apply_token_weights(experience.advantages, batch.weights, mask)
    actions = mask.to(torch.float32).cpu()
    row_means = (batch.weights * actions).sum(-1) / actions.sum(-1).clamp(min=1)
    experience.info["ccapo_weight_mean"] = row_means.to(experience.advantages.device)
    return provider.metrics(batch, mask.cpu(), step)


def provider_from_env() -> WeightProvider:
    """The provider `CCAPO_ADAPTER_SETTINGS` (JSON of `CounterfactualConfig`'s fields) describes."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise ValueError(
            f"{SETTINGS_ENV} is not set: start training with examples/openrlhf/train_ppo_ccapo.py "
            "--counterfactual SETTINGS.json"
        )
    return provider_from_settings(json.loads(raw))


class CounterfactualAdvantages:
    """Mix into OpenRLHF's `RemoteExperienceMaker`: its advantages, weighted per token.

    The provider comes from `CCAPO_ADAPTER_SETTINGS` when the maker is built (so a server that is
    down or a bad scoring config fails before the first rollout), unless `weight_provider` is set.
    Each call of `compute_advantages_and_returns` is one training step. With `sync_every`, the
    actor saves its HF model with OpenRLHF's own `save_model` (to `--ckpt.output_dir`, which must
    be `sync_dir`; a LoRA adapter is merged first, `policy_checkpoint`) and the scorer loads it
    before the step's experiences are scored.
    """

    weight_provider: WeightProvider | None = None
    steps_done = 0  # training steps (experience batches) before the current one

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.weight_provider is None:
            self.weight_provider = provider_from_env()
        check_sync_dir(self.weight_provider, self.strategy.args.ckpt.output_dir)

    def compute_advantages_and_returns(self, experiences: list[Any]) -> list[Any]:
        experiences = super().compute_advantages_and_returns(experiences)
        self._sync_policy()
        for experience in experiences:
            metrics = weight_experience(experience, self.weight_provider, step=self.steps_done)
            if "ccapo/policy_lag_steps" in metrics:  # OpenRLHF logs `info` per sample
                lag = torch.full((len(experience.sequences),), metrics["ccapo/policy_lag_steps"])
                experience.info["ccapo_policy_lag_steps"] = lag.to(experience.advantages.device)
        self.steps_done += 1
        return experiences

    def _sync_policy(self) -> None:
        if not self.weight_provider.sync_due(self.steps_done):
            return
        refs = self.actor_model_group.async_save_model()  # the policy's HF checkpoint, written by rank 0
        if refs:
            import ray

            ray.get(refs)
        self.weight_provider.load_policy(policy_checkpoint(self.strategy.args), self.steps_done)


MERGED = "ccapo_merged"  # where a LoRA policy's merged model goes, inside --ckpt.output_dir


def policy_checkpoint(args: Any) -> str:
    """The checkpoint the scorer loads once OpenRLHF's `save_model` has written `--ckpt.output_dir`.

    With LoRA (`--ds.lora.rank` > 0) OpenRLHF saves only the adapter there: it is merged into the base
    model (`--actor.model_name_or_path`) by peft's merge and saved to `MERGED` inside it (`ccapo_adapters.lora`).
    """
    output_dir = args.ckpt.output_dir
    if not args.ds.lora.rank:
        return output_dir
    from ccapo_adapters.lora import merge_adapter

    return merge_adapter(output_dir, args.actor.model_name_or_path, os.path.join(output_dir, MERGED))


def check_sync_dir(provider: WeightProvider, output_dir: str) -> None:
    """OpenRLHF's actor saves its HF model only to `--ckpt.output_dir`: policy sync needs `sync_dir` to be it."""
    sync_dir = provider.config.sync_dir
    if provider.config.sync_every and os.path.realpath(sync_dir or "") != os.path.realpath(output_dir):
        raise ValueError(
            f"ccapo sync_dir {sync_dir!r} must be OpenRLHF's --ckpt.output_dir {output_dir!r}: the actor saves "
            "its HF model there, and the scorer loads it from there (inside its CCAPO_MODEL_ROOTS)"
        )
