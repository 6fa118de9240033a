"""The rollout stage: groups of G rewarded completions, refilled while dynamic sampling drops groups."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ccapo_trainer.advantages import zero_variance_groups
from ccapo_trainer.components import Components
from ccapo_trainer.data import Problem
from ccapo_trainer.distributed import RolloutStats, rollout_metrics
from ccapo_trainer.rollout import decode


@dataclass
class Group:
    """One prompt's G samples."""

    problem: Problem
    prompt: list[int]
    ids: torch.Tensor  # (G, T)
    mask: torch.Tensor  # (G, T)
    truncated: torch.Tensor  # (G,)
    rewards: torch.Tensor  # (G,)
    correct: torch.Tensor  # (G,) bool: the first reward (the task's correctness) gave full marks


@dataclass
class Rollouts:
    groups: list[Group]  # this process's kept groups, at most `prompts_per_step`
    metrics: dict[str, Any]  # over every process's samples, kept or dropped
    completions: list[dict[str, Any]] = field(default_factory=list)  # `log_completions`: every process's


def collect(run: Components) -> Rollouts:
    """Groups with a learning signal, drawing more prompts while dynamic sampling drops groups."""
    config = run.config
    g = config.num_generations
    kept: list[Group] = []
    seen: list[Group] = []
    reward_failures = 0
    generate_s = 0.0
    rounds = 0
    completions = []
    while rounds < config.max_sampling_rounds:
        # Every process takes as many prompts as the neediest one, so that the processes' sampler
        # positions stay in step; one that needs fewer generates for the first ones only.
        wanted = config.prompts_per_step - len(kept)
        needed = int(run.processes.most(wanted))
        if needed <= 0:
            break
        rounds += 1
        drawn = run.prompts.draw(needed, wanted)
        if not drawn:
            continue
        problems = [problem for problem, _ in drawn]
        gen_started = time.perf_counter()
        out = run.generator([prompt for _, prompt in drawn for _ in range(g)])
        generate_s += time.perf_counter() - gen_started
        texts = decode(run.tokenizer, out)
        samples = [problem for problem in problems for _ in range(g)]
        rewards, correct, failures = run.rewards(texts, samples)
        reward_failures += failures
        if config.log_completions:
            completions += [
                {"problem": p.question, "completion": text, "reward": reward}
                for p, text, reward in zip(samples, texts, rewards, strict=True)
            ]
        rewards, correct = torch.tensor(rewards), torch.tensor(correct)
        dead = zero_variance_groups(rewards, g)
        for k, (problem, prompt) in enumerate(drawn):
            rows = slice(k * g, (k + 1) * g)
            group = Group(
                problem, prompt, out.ids[rows], out.mask[rows], out.truncated[rows], rewards[rows], correct[rows]
            )
            seen.append(group)
            if not (config.dynamic_sampling and dead[k]):
                kept.append(group)
    stats = run.processes.gather(_rollout_stats(seen, kept, rounds, reward_failures, generate_s, completions))
    every_process = [{"process": rank, **row} for rank, s in enumerate(stats) for row in s.completions]
    return Rollouts(kept[: config.prompts_per_step], rollout_metrics(stats), every_process)


def _rollout_stats(
    seen: list[Group], kept: list[Group], rounds: int, failures: int, generate_s: float, completions: list[dict]
) -> RolloutStats:
    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0)

    return RolloutStats(
        rewards=cat([g.rewards for g in seen]),
        correct=cat([g.correct for g in seen]),
        lengths=cat([g.mask.sum(-1) for g in seen]),
        truncated=cat([g.truncated for g in seen]),
        zero_variance=[bool((g.rewards == g.rewards[0]).all()) for g in seen],
        kept=len(kept),
        rounds=rounds,
        reward_failures=failures,
        generate_s=generate_s,
        completions=completions,
    )
