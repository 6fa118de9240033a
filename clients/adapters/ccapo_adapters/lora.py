"""LoRA policies as plain checkpoints a scorer can load: adapters merged into the base weights by peft's own merge.

A scorer loads a policy with transformers' `from_pretrained`, which takes a plain model. Trained
with LoRA, the frameworks write something else:

- verl's FSDP checkpoint manager exports the PEFT-wrapped state dict into its `huggingface`
  folder (`base_model.model.<module>.base_layer.weight`, `lora_A`, `lora_B`), which
  `from_pretrained` would leave randomly initialised: `merge_wrapped_export` rewrites that folder
  as the merged model.
- OpenRLHF's `save_model` writes only the adapter (`adapter_config.json`, `adapter_model.*`):
  `merge_adapter` loads the base model, applies the adapter and saves the merged model.

Merging where the policy is saved, rather than having the scorer load base + adapter, keeps the
scorer a plain model (its engine runs it like any other and needs no peft), works with any scorer
(HTTP or Ray Serve) and keeps the merge peft's (scaling, rsLoRA, DoRA as peft defines them). It
costs one model copy in CPU memory, on the saving process, at each sync.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

__all__ = ["merge_adapter", "merge_wrapped_export", "peft_config_of"]


def peft_config_of(model: Any) -> Any | None:
    """The LoRA config of a (possibly FSDP-wrapped) PEFT model, or None for a plain model."""
    unwrapped = getattr(model, "_fsdp_wrapped_module", model)
    configs = getattr(unwrapped, "peft_config", None)
    if not configs:
        return None
    if isinstance(configs, dict):
        return configs.get("default") or next(iter(configs.values()))
    return configs


def merge_wrapped_export(folder: str | Path, peft_config: Any) -> None:
    """Rewrite an HF folder that holds a PEFT-wrapped state dict as the plain model with the adapter merged."""
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    state = {name: tensor for file in files for name, tensor in load_file(file).items()}
    config = AutoConfig.from_pretrained(folder)
    base = AutoModelForCausalLM.from_config(config, dtype=next(iter(state.values())).dtype)
    model = get_peft_model(base, copy.deepcopy(peft_config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = config.get_text_config().tie_word_embeddings
    missing = [name for name in missing if not (tied and name.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise ValueError(
            f"{folder} is not the PEFT-wrapped export of this LoRA model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    merged = model.merge_and_unload()
    for file in [*files, *folder.glob("*.safetensors.index.json")]:
        file.unlink()
    merged.save_pretrained(folder)


def merge_adapter(adapter_dir: str | Path, base: str, into: str | Path) -> str:
    """The base model `base` (a path or hub id) with the LoRA adapter saved in `adapter_dir`, merged, saved to
    `into` with the tokenizer saved beside the adapter; returns `into`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(into)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(into)
    return str(into)
