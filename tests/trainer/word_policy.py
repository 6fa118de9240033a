"""The tiny word-level policy's vocabulary, problems and reward, shared by the trainer tests."""

from __future__ import annotations

from ccapo_trainer.data import Problem

WORDS = ["<pad>", "<eos>", "<bos>", *"0123456789", "+", "=", "####", ".", "so", "the", "answer", "is", "we", "add",
         "what", "?"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} .{% endif %}"
)
PROBLEMS = [
    Problem("what is 3 + 4 ?", "7"),
    Problem("what is 2 + 2 ?", "4"),
    Problem("what is 5 + 3 ?", "8"),
    Problem("what is 1 + 5 ?", "6"),
]


def mentions_answer(completion: str, answer: str) -> float:
    """A reward a random policy earns about half the time: the answer is among the completion's words."""
    return float(answer in completion.split())


REWARDS = {"mentions_answer": mentions_answer}
