"""One shared copy of a group's base-pass keys and values, with room for one pass's fed keys.

Per layer one tensor (1, kv heads, slots x stride + fed, head dim): slot s holds trace s's base
pass in columns [s x stride, s x stride + its length); the fed region after them holds the keys
the pass in flight feeds, at their packed offsets. Rows read the base columns where they lie
(`packing.py` says which), so no row copies a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVStore:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    stride: int  # columns per slot: the group's longest trace
    slots: int

    @property
    def fed_start(self) -> int:
        return self.slots * self.stride

    @property
    def fed_room(self) -> int:
        return self.keys[0].shape[2] - self.fed_start

    @classmethod
    def empty(cls, like: list[tuple[torch.Tensor, torch.Tensor]], slots: int, stride: int, fed: int) -> KVStore:
        """Zeros shaped after one base pass's per-layer keys and values (zeros, never garbage: a
        masked key is still multiplied by 0 in a fused kernel, and 0 x NaN would leak)."""
        keys, values = [], []
        for k, v in like:
            keys.append(k.new_zeros((1, k.shape[1], slots * stride + fed, k.shape[3])))
            values.append(v.new_zeros((1, v.shape[1], slots * stride + fed, v.shape[3])))
        return cls(keys, values, stride, slots)

    def put(self, slot: int, layers: list[tuple[torch.Tensor, torch.Tensor]], row: int, length: int) -> None:
        """Row `row` of a base pass's per-layer (rows, heads, positions, dim) keys and values, its
        first `length` positions, into `slot`."""
        at = slot * self.stride
        for layer, (k, v) in enumerate(layers):
            self.keys[layer][0, :, at : at + length] = k[row, :, :length]
            self.values[layer][0, :, at : at + length] = v[row, :, :length]

    def base(self, layer: int, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of slot's first `length` keys and values (1, heads, length, dim)."""
        at = slot * self.stride
        return self.keys[layer][:, :, at : at + length], self.values[layer][:, :, at : at + length]
