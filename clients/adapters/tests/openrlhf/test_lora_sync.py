"""OpenRLHF with LoRA saves only the adapter: policy sync merges it into the base model before the scorer loads it.

OpenRLHF's real experience maker (as in test_openrlhf_advantages.py), built from OpenRLHF's own
arguments with `--ds.lora.rank 4`, syncs at its first step against a real scoring server. The
actor group is OpenRLHF's DeepSpeed actors on GPUs; `LoraActorGroupOnCPU` stands in for it and
writes what its `save_model` writes for a PEFT model (the adapter, config.json and the tokenizer;
`openrlhf/utils/deepspeed/deepspeed.py`). The scorer must serve the merged model, whose logits
are peft's merge of the same adapter. Cost: a few seconds (the server is the session's).
"""

from __future__ import annotations

import copy

import httpx
import torch
from adapter_traces import COMPLETIONS, PROMPTS
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.openrlhf import MERGED
from test_openrlhf_advantages import experience_maker, make_experience


class LoraActorGroupOnCPU:
    """Stands in for OpenRLHF's `RayActorGroup` of DeepSpeed actors (GPU only) training a LoRA policy:
    `async_save_model` writes, in this process, what OpenRLHF's `save_model` writes for a `PeftModel`
    (no Ray refs to wait on)."""

    def __init__(self, model, tokenizer, output_dir):
        self.model, self.tokenizer, self.output_dir, self.saves = model, tokenizer, output_dir, 0

    def async_save_model(self) -> list:
        self.saves += 1
        self.model.save_pretrained(self.output_dir)  # the adapter only
        self.model.config.to_json_file(self.output_dir / "config.json")
        self.tokenizer.save_pretrained(self.output_dir)
        return []


def test_a_lora_policy_is_merged_and_the_scorer_serves_the_merged_model(
    openrlhf_modules, tokenizer, server_url, model_root, tiny_model_dir
):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)
    merged = copy.deepcopy(policy).merge_and_unload().eval()
    output_dir = model_root / "openrlhf-lora"
    config = CounterfactualConfig(
        provider="remote", server_url=server_url, admin_key="admin", sync_every=1, sync_dir=str(output_dir)
    )
    group = LoraActorGroupOnCPU(policy, tokenizer, output_dir)
    maker = experience_maker(
        openrlhf_modules,
        WeightProvider.remote(config),
        output_dir=str(output_dir),
        actor_group=group,
        extra_args=("--ds.lora.rank", "4", "--actor.model_name_or_path", tiny_model_dir),
    )
    experience, _ = make_experience(openrlhf_modules, tokenizer)
    maker.compute_advantages_and_returns([experience])  # step 0: the policy is saved, merged and pushed

    assert group.saves == 1 and maker.weight_provider.synced_step == 0
    assert httpx.get(f"{server_url}/v1/model").json()["id"].endswith(f"{output_dir.name}/{MERGED}")
    loaded, info = AutoModelForCausalLM.from_pretrained(output_dir / MERGED, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = tokenizer(PROMPTS[0] + COMPLETIONS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, merged(ids).logits)
