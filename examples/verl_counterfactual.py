"""Counterfactual weights for a verl batch: fill them beside `response_mask`, fold them into the advantages.

    python examples/verl_counterfactual.py                                  # in-process scorer (bundled model)
    python examples/verl_counterfactual.py --server http://127.0.0.1:8000   # through a scoring server

It builds a batch with verl's layout (left-padded `prompts`, right-padded `responses`,
`attention_mask`, `response_mask`, GRPO-style `advantages`) from GSM8K-style gold solutions and
runs the two calls a verl trainer makes per step. With verl installed, the batch is a real
`verl.DataProto`; in a training run, mix `CounterfactualActorUpdate` into `RayPPOTrainer` instead
(docs/integrations.md) and the same two calls happen before every actor update.
"""

from __future__ import annotations

import argparse
import importlib.util
from types import SimpleNamespace

import torch
from ccapo_adapters import CounterfactualConfig, WeightProvider
from ccapo_adapters.inprocess import in_process_provider
from ccapo_adapters.verl import WEIGHTS_KEY, fill_token_weights, weight_advantages

from ccapo.gsm import gsm_symbolic_problems, math_prompt
from ccapo.models import load_model


def verl_batch(tokenizer, n: int) -> dict[str, torch.Tensor]:
    problems = gsm_symbolic_problems(n, seed=1)
    prompts = [tokenizer.apply_chat_template(math_prompt(p.question), add_generation_prompt=True) for p in problems]
    prompts = [ids if isinstance(ids, list) else ids["input_ids"] for ids in prompts]
    responses = [[*tokenizer(p.solution, add_special_tokens=False).input_ids, tokenizer.eos_token_id] for p in problems]
    width, length = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    batch = {
        "prompts": torch.full((n, width), pad),
        "responses": torch.full((n, length), pad),
        "attention_mask": torch.zeros((n, width + length), dtype=torch.long),
    }
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        batch["prompts"][i, width - len(prompt) :] = torch.tensor(prompt)
        batch["responses"][i, : len(response)] = torch.tensor(response)
        batch["attention_mask"][i, width - len(prompt) : width + len(response)] = 1
    batch["input_ids"] = torch.cat([batch["prompts"], batch["responses"]], 1)
    batch["response_mask"] = batch["attention_mask"][:, width:].clone()
    batch["advantages"] = torch.linspace(1.0, -1.0, n)[:, None] * batch["response_mask"]
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory or hub id (default: bundled SmolLM2-135M)")
    parser.add_argument("--server", default=None, help="scoring server URL (default: score in-process)")
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    tensors = verl_batch(tokenizer, args.n)
    if importlib.util.find_spec("verl") is not None:
        from verl import DataProto

        data = DataProto.from_dict(tensors=tensors)
    else:
        data = SimpleNamespace(batch=tensors)  # the same keys and shapes, without verl installed
    if args.server:
        provider = WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=args.server))
    else:
        provider = in_process_provider(model, tokenizer, CounterfactualConfig())

    before = data.batch["advantages"].clone()
    metrics = fill_token_weights(data, provider, step=0)  # before compute_advantage or after: it reads ids only
    weight_advantages(data)  # after compute_advantage
    for key, value in metrics.items():
        print(f"{key:28s} {value:.3f}")
    row = 0
    weights, mask = data.batch[WEIGHTS_KEY][row], data.batch["response_mask"][row].bool()
    ids = data.batch["responses"][row][mask]
    print(f"\nresponse {row}: advantage {before[row, 0]:+.2f}; token weights:")
    for token, weight in zip(tokenizer.convert_ids_to_tokens(ids), weights[mask].tolist(), strict=True):
        print(f"  {weight:5.2f}  {token!r}")


if __name__ == "__main__":
    main()
