"""Test support: a rollout server on CPU for verl 0.9.1, registered as rollout `ccapo_cpu`. Not part of ccapo.

verl 0.9.1 generates only with vLLM, SGLang or TensorRT-LLM servers (`workers/rollout/replica.py`,
`RolloutReplicaRegistry`; `workers/rollout/base.py`, `_ROLLOUT_REGISTRY`), none of which runs
without a GPU. This module stands in for them, behind the same two contracts, registered through
the same registries (loaded in every process by `VERL_USE_EXTERNAL_MODULES`, see `cpu_platform`):

- `CPUReplica` (verl's `RolloutReplica`): `launch_servers` starts one `CPUServer` Ray actor per
  replica, which answers what verl's `LLMServerClient`, load balancer and `CheckpointEngineManager`
  call on a server: `generate` (token ids in, `TokenOutput` out: HF `generate` on the model, with
  its log-probs) and the sleep / wake-up / abort / cache calls, which have nothing to free on CPU.
- `CPURollout` (verl's `BaseRollout`, built by `ActorRolloutRefWorker.init_model` in each actor
  worker): `update_weights` receives the actor's weights from verl's naive checkpoint engine (the
  colocated sync verl runs every step) and loads them into its replica's server, as vLLM's
  `ServerAdapter` does over CUDA IPC.

So verl's agent loop, load balancer and weight sync run unchanged; the generation is HF's, not a
serving engine's (no batching, paging or prefix cache), which the tiny test model does not need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import ray
import torch
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

NAME = "ccapo_cpu"


def server_name(replica_rank: int) -> str:
    return f"{NAME}_rollout_server_{replica_rank}"


class CPUServer:
    """One replica's server (a Ray actor): the model, generating with HF `generate` on CPU."""

    def __init__(self, model_path: str, response_length: int):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.response_length = response_length
        self.global_steps = 0  # the trainer step whose weights it holds, reported with every output (as vLLM's)
        self.lock = asyncio.Lock()  # one generation at a time: the model is shared

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any], **_) -> Any:
        temperature = float(sampling_params.get("temperature", 1.0))
        options: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            top_k = int(sampling_params.get("top_k", -1))
            options.update(temperature=temperature, top_p=float(sampling_params.get("top_p", 1.0)))
            options["top_k"] = top_k if top_k > 0 else None
        async with self.lock:
            output = await asyncio.to_thread(self._generate, prompt_ids, options)
        return output

    def _generate(self, prompt_ids: list[int], options: dict[str, Any]) -> TokenOutput:
        config = self.model.generation_config
        with torch.no_grad():
            out = self.model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                max_new_tokens=self.response_length,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=config.pad_token_id if config.pad_token_id is not None else config.eos_token_id,
                **options,
            )
        tokens = out.sequences[0, len(prompt_ids) :]
        logits = torch.stack(out.scores, 1)[0]
        log_probs = torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, None])[:, 0]
        return TokenOutput(
            token_ids=tokens.tolist(),
            log_probs=log_probs.tolist(),
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def load_weights(self, named: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """The actor's weights (HF names) after `global_steps`; returns how many tensors were loaded."""
        result = self.model.load_state_dict(named, strict=False)
        if result.unexpected_keys:
            raise KeyError(f"weights the rollout model does not have: {result.unexpected_keys[:5]}")
        if global_steps is not None:
            self.global_steps = global_steps
        return len(named)

    async def wake_up(self) -> None:  # the calls below have nothing to do on CPU
        return None

    sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = resume_generation = stop_profile = wake_up

    async def abort_all_requests(self, reject_request: bool = False) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None


class CPUReplica(RolloutReplica):
    """verl's `RolloutReplica` for `CPUServer`: one server per replica, a named Ray actor."""

    async def launch_servers(self) -> None:
        server = (
            ray.remote(CPUServer)
            .options(name=server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(
                getattr(self.model_config, "local_path", None) or self.model_config.path, self.config.response_length
            )
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{NAME}-replica-{self.replica_rank}"  # a key for verl's load balancer; no HTTP


class CPURollout(BaseRollout):
    """verl's `BaseRollout` in each actor worker: hands the actor's weights to its replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        world = self.config.tensor_model_parallel_size * self.config.data_parallel_size
        world *= self.config.pipeline_model_parallel_size
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.replica_rank, self.is_leader = rank // world, rank % world == 0

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self, weights: Generator[tuple[str, torch.Tensor], None, None], wire_format: str = "named_tensors", **kwargs
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the CPU rollout takes full named tensors, not {wire_format!r}")
        named = {name: _full(tensor) for name, tensor in weights}  # every rank takes part in the gathers
        if self.is_leader:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(named, kwargs.get("global_steps"))


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor (FSDP2 hands DTensors)."""
    full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    return full.detach().to("cpu").clone()


RolloutReplicaRegistry.register(NAME, lambda: CPUReplica)
rollout_base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.CPURollout"
