"""Rollouts with vLLM, colocated in the training process (`use_vllm: true`, the [vllm] extra, CUDA).

vLLM runs in-process (`distributed_executor_backend="external_launcher"`, the mode TRL's colocate
generation uses) and receives the policy's weights after every optimizer step, LoRA adapters merged
for the push and unmerged again. Completions come back as the same `Completions` HF generation gives.
Not exercised by the CPU test suite: vLLM needs CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedModel

from ccapo_trainer.rollout import Completions, Sampling, completions_from_ids


class VllmGenerator:
    def __init__(self, model_path: str, *, seed: int, max_model_len: int, gpu_memory_utilization: float):
        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError("use_vllm needs vLLM on a CUDA machine: pip install '.[vllm]' from a clone") from None
        if not torch.distributed.is_initialized():  # a single process: vLLM's launcher still reads these
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                               ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29531")):
                os.environ.setdefault(key, value)
        self.llm = LLM(
            model=model_path,
            seed=seed,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            distributed_executor_backend="external_launcher",
            dtype="bfloat16",
        )

    def sync(self, model: PreTrainedModel) -> None:
        """Push the policy's current weights into vLLM's copy."""
        target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in _plain_weights(model):
            target.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: Sampling, stops: list[int], pad_id: int
    ) -> Completions:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=sampling.temperature if sampling.do_sample else 0.0,
            top_p=sampling.top_p if sampling.do_sample else 1.0,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=stops,
        )
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        rows = [list(out.outputs[0].token_ids) for out in outputs]
        ids = torch.full((len(rows), max(map(len, rows), default=0) or 1), pad_id, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        return completions_from_ids(ids, stops, pad_id, sampling.max_new_tokens)


def _plain_weights(model: PreTrainedModel) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) as a plain checkpoint names them; a peft model's adapters are merged meanwhile."""
    if not hasattr(model, "merge_adapter"):
        yield from ((name, p.data) for name, p in model.named_parameters())
        return
    model.merge_adapter()
    try:
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            yield name, p.data
    finally:
        model.unmerge_adapter()
