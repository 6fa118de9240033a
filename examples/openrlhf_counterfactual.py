"""Counterfactual multipliers for OpenRLHF experience advantages, on an `Experience`-shaped batch.

    python examples/openrlhf_counterfactual.py                                  # in-process scorer
    python examples/openrlhf_counterfactual.py --server http://127.0.0.1:8000   # through a scoring server

It builds OpenRLHF's layout (`sequences` = prompt + response, right-padded; `action_mask` (B, S - 1)
shifted by one; advantages on the action grid) from GSM8K-style gold solutions and calls
`weight_experience`, as the subclass recipe in docs/integrations.md does after OpenRLHF's
`compute_advantages_and_returns`. OpenRLHF itself is not needed (it imports only with CUDA).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.inprocess import in_process_provider
from ccapo_adapters.openrlhf import weight_experience

from ccapo.gsm import gsm_symbolic_problems, math_prompt
from ccapo.models import load_model


def experience(tokenizer, n: int) -> SimpleNamespace:
    problems = gsm_symbolic_problems(n, seed=2)
    rows, actions = [], []
    for problem in problems:
        prompt = tokenizer.apply_chat_template(math_prompt(problem.question), add_generation_prompt=True)
        prompt = prompt if isinstance(prompt, list) else prompt["input_ids"]
        response = [*tokenizer(problem.solution, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        rows.append(prompt + response)
        actions.append([0] * len(prompt) + [1] * len(response))
    length = max(map(len, rows))
    sequences = torch.full((n, length), tokenizer.pad_token_id)
    attention, action = torch.zeros((n, length), dtype=torch.long), torch.zeros((n, length), dtype=torch.bool)
    for i, (row, acts) in enumerate(zip(rows, actions, strict=True)):
        sequences[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        action[i, : len(acts)] = torch.tensor(acts, dtype=torch.bool)
    action_mask = action[:, 1:]  # action j is sequence token j + 1
    advantages = torch.linspace(1.0, -1.0, n)[:, None] * action_mask
    return SimpleNamespace(
        sequences=sequences, attention_mask=attention, action_mask=action_mask, advantages=advantages, info={}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory or hub id (default: bundled SmolLM2-135M)")
    parser.add_argument("--server", default=None, help="scoring server URL (default: score in-process)")
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    exp = experience(tokenizer, args.n)
    if args.server:
        provider = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=args.server))
    else:
        provider = in_process_provider(model, tokenizer, CounterfactualConfig())
    before = exp.advantages.clone()
    metrics = weight_experience(exp, provider, step=0)
    for key, value in metrics.items():
        print(f"{key:28s} {value:.3f}")
    print("per-sample mean weight:", [round(v, 2) for v in exp.info["ccapo_weight_mean"].tolist()])
    row = 0
    mask = exp.action_mask[row]
    ids = exp.sequences[row, 1:][mask]
    ratios = (exp.advantages[row][mask] / before[row][mask]).tolist()
    print(f"\nsample {row}: advantage multipliers per action token:")
    for token, ratio in zip(tokenizer.convert_ids_to_tokens(ids), ratios, strict=True):
        print(f"  {ratio:5.2f}  {token!r}")


if __name__ == "__main__":
    main()
