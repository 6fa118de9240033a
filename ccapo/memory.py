"""How much memory the engine may use, and what its tensors cost per token.

The engine sizes its work from these numbers instead of fixed padded sizes: the base-pass KV it
keeps for a group of traces, the rows per counterfactual pass, and the query chunk a long row is
fed in. The costs estimate what the engine's own tensors take beyond the model's weights. They
miss the allocator's retained free memory and small transients: on the default model they were
75-99% of the process's measured peak RSS growth (`bench/memory.py`), and `MEMORY_SHARE` leaves
room for the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

# Share of the memory free when scoring starts that the engine plans to use: the rest is headroom
# for the allocator's fragmentation, other processes and what the estimates leave out.
MEMORY_SHARE = 0.5
# Assumed when neither the device nor the system says how much is free.
FALLBACK_MEMORY = 4 << 30
# Per attention-mask element: the float mask, plus the bool tensors alive while it is built.
MASK_TEMP_BYTES = 4


@dataclass(frozen=True)
class TokenCosts:
    """Bytes per token of a model's tensors, at its dtype."""

    kv: int  # keys and values of one position, all layers
    activation: int  # one fed position's live activations inside a layer (attention and MLP)
    mask_element: int  # one (query, key) entry of the additive attention mask

    @classmethod
    def of(cls, model: PreTrainedModel) -> TokenCosts:
        config = model.config.get_text_config()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        size = torch.finfo(model.dtype).bits // 8
        kv = config.num_hidden_layers * 2 * kv_heads * head_dim * size
        # Residual, normed and attention-output states; queries and the keys/values repeated to every
        # query head; the MLP's gate, up and their product.
        per_position = 3 * config.hidden_size + 3 * heads * head_dim + 3 * config.intermediate_size
        return cls(kv=kv, activation=per_position * size, mask_element=size + MASK_TEMP_BYTES)

    def pass_bytes(self, rows: int, keys: int, queries: int, masked: bool = True) -> int:
        """A forward pass of `rows` rows feeding `queries` positions each over `keys` keys (cache included);
        unmasked: causal attention, which needs no mask tensor."""
        mask = keys * self.mask_element if masked else 0
        return rows * (keys * self.kv + queries * (mask + self.activation))

    def queries_within(self, room: int, rows: int, keys: int, masked: bool = True) -> int:
        """The most queries per row a pass over `keys` keys may feed in `room` bytes (< 1: none)."""
        mask = keys * self.mask_element if masked else 0
        return (room - rows * keys * self.kv) // (rows * (mask + self.activation))


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on `device` now: CUDA's free memory plus what torch holds cached,
    else the system's available memory within this process's cgroup limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    candidates = [m for m in (_meminfo_available(), _cgroup_headroom()) if m is not None]
    if not candidates:
        try:
            import psutil  # optional: the only portable way off Linux

            return int(psutil.virtual_memory().available)
        except ImportError:
            logger.warning("cannot tell the free memory here; assuming %d GiB", FALLBACK_MEMORY >> 30)
            return FALLBACK_MEMORY
    return min(candidates)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_headroom() -> int | None:
    """A container's memory limit minus its usage (cgroup v2, else v1); None when unlimited or unknown.

    Usage counts the page cache; its inactive part is reclaimable, so it counts as free, as `docker stats` does.
    """
    for folder, limit_name, usage_name, inactive_key in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        try:
            limit = (Path(folder) / limit_name).read_text().strip()
            usage = int((Path(folder) / usage_name).read_text())
            stat = (Path(folder) / "memory.stat").read_text().split("\n")
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 1 << 60:  # "max" (v2) or a huge number (v1): no limit
            return None
        inactive = next((int(line.split()[1]) for line in stat if line.startswith(inactive_key + " ")), 0)
        return max(0, int(limit) - usage + inactive)
    return None
