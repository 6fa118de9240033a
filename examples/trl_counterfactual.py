"""GRPO with counterfactual token weights in TRL, on offline GSM8K-style problems.

    python examples/trl_counterfactual.py                      # the policy scores itself (in-process)
    python examples/trl_counterfactual.py --weighting uniform  # the baseline arm: stock GRPO
    python examples/trl_counterfactual.py --server http://127.0.0.1:8000  # a scoring server scores

Defaults run a few steps of the bundled SmolLM2-135M on CPU (minutes); `--model` takes any causal
LM directory or hub id. With `--server`, the server should serve the same starting model;
`--sync-every N --sync-dir DIR` pushes the policy to it every N steps (DIR must be readable by the
server, inside its CCAPO_MODEL_ROOTS, and the server needs CCAPO_ADMIN_KEY = `--admin-key`).
"""

from __future__ import annotations

import argparse
import re

import torch
from ccapo_adapters import CounterfactualConfig
from ccapo_adapters.batch import WEIGHTINGS
from ccapo_adapters.trl import CounterfactualGRPOTrainer
from datasets import Dataset
from trl import GRPOConfig

from ccapo.gsm import gsm_symbolic_problems, math_prompt
from ccapo.models import load_model


def correct(completions: list, answer: list[str], **kwargs) -> list[float]:
    """1.0 when the number after the last "####" equals the reference answer."""
    rewards = []
    for completion, expected in zip(completions, answer, strict=True):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        found = re.findall(r"####\s*(-?[\d,.]+)", text)
        rewards.append(float(bool(found) and found[-1].replace(",", "").rstrip(".") == expected))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory or hub id (default: bundled SmolLM2-135M)")
    parser.add_argument("--weighting", default="counterfactual", choices=WEIGHTINGS)
    parser.add_argument("--server", default=None, help="scoring server URL (default: score in-process)")
    parser.add_argument("--admin-key", default=None)
    parser.add_argument(
        "--sync-every", type=int, default=None, help="default: every step once --sync-dir is set (0: never)"
    )
    parser.add_argument("--sync-dir", default=None)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=192)
    parser.add_argument("--output-dir", default="runs/trl-counterfactual")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    problems = gsm_symbolic_problems(16, seed=0)
    dataset = Dataset.from_list([{"prompt": math_prompt(p.question), "answer": p.answer} for p in problems])
    counterfactual = CounterfactualConfig(
        weighting=args.weighting,
        provider="remote" if args.server else "inprocess",
        server_url=args.server,
        admin_key=args.admin_key,
        sync_every=args.sync_every,
        sync_dir=args.sync_dir,
    )
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=args.max_completion_length,
        temperature=0.6,
        top_p=0.95,
        learning_rate=2.5e-5,
        loss_type="dapo",  # the paper's loss
        epsilon_high=0.28,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),  # fp32 on CPU: bf16 is slower there
    )
    trainer = CounterfactualGRPOTrainer(
        model=model,
        reward_funcs=correct,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        counterfactual=counterfactual,
    )
    trainer.train()
    for log in trainer.state.log_history:
        if "ccapo/weights/mean" in log:
            print(
                f"step {log['step']}: reward {log['reward']:.2f}  weights mean {log['ccapo/weights/mean']:.2f} "
                f"scored {log['ccapo/weights/scored_share']:.0%}  scoring {log['ccapo/score_seconds']:.2f}s "
                f"of {log['step_time']:.2f}s"
            )


if __name__ == "__main__":
    main()
