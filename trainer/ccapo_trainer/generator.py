"""Where a run's completions come from: the policy itself (HF `generate`) or a colocated vLLM copy of it."""

from __future__ import annotations

from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccapo_trainer.rollout import Completions, Sampling, generate, stop_token_ids
from ccapo_trainer.vllm_rollout import VllmGenerator


class Generator:
    """Completions from the current policy: HF `generate` under the run's autocast, or colocated vLLM,
    which `follow` brings up to date after every optimizer step."""

    def __init__(
        self,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sampling: Sampling,
        accelerator: Accelerator,
        vllm: VllmGenerator | None = None,
    ):
        self.policy = policy
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.accelerator = accelerator
        self.vllm = vllm

    def __call__(self, prompts: list[list[int]]) -> Completions:
        if self.vllm is not None:
            stops = stop_token_ids(self.policy, self.tokenizer)
            return self.vllm.generate(prompts, self.sampling, stops, self.tokenizer.pad_token_id)
        with self.accelerator.autocast():
            return generate(self.policy, self.tokenizer, prompts, self.sampling)

    def follow(self) -> None:
        """vLLM holds its own copy of the weights: push the updated policy's (HF generation uses it directly)."""
        if self.vllm is not None:
            self.vllm.sync(self.policy)
