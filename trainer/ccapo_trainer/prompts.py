"""Which problems a step draws: a seeded order per epoch, interleaved across processes, each
problem's prompt encoded once. The position in that order is part of every checkpoint."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from ccapo_trainer.checkpoint import DataPosition
from ccapo_trainer.data import Problem, encode_prompt

logger = logging.getLogger(__name__)


class PromptSampler:
    """Draws `(problem, prompt ids)` pairs; prompts over `max_prompt_length` tokens are skipped with a warning."""

    def __init__(
        self,
        problems: Sequence[Problem],
        tokenizer: PreTrainedTokenizerBase,
        *,
        system_prompt: str | None,
        max_prompt_length: int,
        seed: int,
        position: DataPosition,
        rank: int = 0,
        world: int = 1,
    ):
        self.problems = list(problems)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_prompt_length = max_prompt_length
        self.seed, self.position, self.rank, self.world = seed, position, rank, world
        self._order = self._permutation()
        self._encoded: dict[int, list[int]] = {}

    def draw(self, taken: int, used: int) -> list[tuple[Problem, list[int]]]:
        """Advance by `taken` prompts (every process takes as many, so their positions stay in step)
        and return the first `used` of them that fit."""
        drawn = []
        for index in self._take(taken)[:used]:
            prompt = self._prompt(index)
            if len(prompt) > self.max_prompt_length:
                limit = self.max_prompt_length
                logger.warning("skipping problem %d: its prompt has %d tokens (max %d)", index, len(prompt), limit)
                continue
            drawn.append((self.problems[index], prompt))
        return drawn

    def _prompt(self, index: int) -> list[int]:
        if index not in self._encoded:
            self._encoded[index] = encode_prompt(self.tokenizer, self.problems[index], self.system_prompt)
        return self._encoded[index]

    def _take(self, n: int) -> list[int]:
        taken = []
        while len(taken) < n:
            if self.position.cursor >= len(self.problems):
                self.position = DataPosition(self.position.epoch + 1, 0)
                self._order = self._permutation()
            index = self.position.cursor + self.rank  # processes take interleaved prompts
            self.position.cursor += self.world
            if index < len(self.problems):
                taken.append(self._order[index])
        return taken

    def _permutation(self) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + self.position.epoch).shuffle(order)
        return order
