"""Abandoned work stops within one decoder layer, not at the end of the forward pass in flight.

A pass over long rows can take seconds on a CPU; a server that only checked between passes kept
computing for a request that was already answered 504, and the next request waited for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

logger = logging.getLogger(__name__)


class _Abandoned(Exception):
    """Raised before a decoder layer runs; `stop_between_layers` catches it, so it never leaves the block."""


def decoder_layers(decoder: nn.Module) -> list[nn.Module]:
    """The decoder's layers, in order: transformers builds each as a `GradientCheckpointingLayer`.

    Empty for a model built otherwise (remote code may be): its passes then stop only between passes.
    """
    return [module for module in decoder.modules() if isinstance(module, GradientCheckpointingLayer)]


@contextmanager
def stop_between_layers(decoder: nn.Module, cancelled: Callable[[int], bool], jobs: Sequence[int]) -> Iterator[None]:
    """Inside the block, every decoder layer first asks `cancelled(i)` for the `jobs` the block works for; once
    it says True for all of them, the block ends there.

    The rest of the block is skipped, as if it had returned early: whatever it was filling in stays
    as it was before the pass (callers treat it as dropped). Only forward passes on the thread that
    entered the block are checked: another thread using the same model is never interrupted.
    """
    owner = threading.get_ident()

    def check(module: nn.Module, args: object) -> None:
        if threading.get_ident() == owner and all(cancelled(i) for i in jobs):
            raise _Abandoned

    handles = [layer.register_forward_pre_hook(check) for layer in decoder_layers(decoder)]
    try:
        yield
    except _Abandoned:
        logger.debug("abandoned work stopped between decoder layers")
    finally:
        for handle in handles:
            handle.remove()
