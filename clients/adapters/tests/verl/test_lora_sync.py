"""A LoRA actor's policy sync writes the merged model, which the scorer loads as it loads any checkpoint.

The tiny llama with LoRA adapters (peft, B initialised at random so that the adapters change the
output) is sharded by FSDP2 over one CPU rank (gloo); verl's real `FSDPCheckpointManager` exports
it as a sync does (`save_hf_weights`). verl's FSDP engine, which hands its save to that manager
after moving offloaded parameters (GPU work), is stood in for by the manager's own `save_checkpoint`.
The folder must load with `from_pretrained` without a missing or unexpected key and give peft's
merged model's logits: verl's export alone holds the PEFT-wrapped state dict, which loads as a
randomly initialised model. Cost: about 10 s.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from ccapo_adapters.verl_sync import hf_folder, save_hf_weights
from live_server import free_port
from omegaconf import OmegaConf
from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager


@pytest.fixture(scope="module")
def lora_actor(tiny_model_dir: str):
    """verl's checkpoint manager over the tiny llama with LoRA under FSDP2, and peft's merge of the same model."""
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(base, lora)
        merged = copy.deepcopy(model).merge_and_unload().eval()
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        contents = OmegaConf.create({"save_contents": ["model"], "load_contents": ["model"]})
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        yield FSDPCheckpointManager(model, optimizer, None, tokenizer, contents), merged
    finally:
        torch.distributed.destroy_process_group()


def test_a_lora_actor_syncs_the_merged_model(lora_actor, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    manager, merged = lora_actor
    engine = SimpleNamespace(checkpoint_manager=manager, save_checkpoint=manager.save_checkpoint)
    save_hf_weights(SimpleNamespace(actor=SimpleNamespace(engine=engine)), str(tmp_path))

    loaded, info = AutoModelForCausalLM.from_pretrained(hf_folder(str(tmp_path), "fsdp"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = tokenizer("Q: What is 4 * 6 - 3?\nA: 4 * 6 = 24", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, merged(ids).logits)
    assert manager.checkpoint_save_contents == ["model"]
