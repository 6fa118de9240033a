"""ccapo beside the authors' released code (aligntune 0.1.28) on the same token ids.

    .venv-aligntune/bin/python -m bench.paper_parity            # the tables in docs/method.md
    .venv-aligntune/bin/python -m bench.paper_parity --traces 4 # the bundled examples only

Needs the `aligntune` package (`make aligntune-env` builds .venv-aligntune). Ten GSM8K-style traces (the
four bundled examples and six gold `gsm_symbolic` solutions: single line breaks, decimals, `%`, `x`,
`*`, `\\boxed`), each with and without the end-of-turn token that TRL's completions end with, go
through the authors' `compute_batched_counterfactual_importance` and `compute_soft_weights` (boost
4.0, min weight 0.5, answer weight 1.5, no conservation: the paper's settings) and through ccapo
under two configurations: the "aligntune" preset, and ccapo's own rules with the paper's pad
intervention and weight scheme (`configs/paper.yaml`). Per configuration and trace it reports
whether the spans and the answer start are the authors', the largest drop difference on shared
spans, the token-weight correlation with the authors', whether the highest-weighted reasoning token
is one of theirs, and the mean weights; ccapo's default (`delete`, the mean-1 `normalized` scheme)
is shown beside them. A second table (bench/paper_rules.py) swaps one rule at a time.
tests/paper/test_aligntune_parity.py holds the preset to the authors' numbers with the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from bench import paper_rules
from ccapo import Scorer, ScoringConfig
from ccapo.examples import load_examples
from ccapo.gsm import gsm_traces
from ccapo.models import ensure_default_model

# The paper's settings of the authors' trainer (docs/method.md, "Reference configuration").
AUTHORS_WEIGHTS = {"boost_factor": 4.0, "min_weight": 0.5, "answer_weight": 1.5, "enable_gradient_conservation": False}
CONFIGS = {
    "preset": ScoringConfig(preset="aligntune"),
    "ccapo paper.yaml": paper_rules.OURS,
    "ccapo default": ScoringConfig(),
}


@dataclass(frozen=True)
class IdTrace:
    name: str
    prompt_ids: list[int]
    completion_ids: list[int]

    def as_trace(self) -> dict[str, list[int]]:
        return {"prompt_ids": self.prompt_ids, "completion_ids": self.completion_ids}


@dataclass(frozen=True)
class Outcome:
    """One side's answer for one trace, completion-relative."""

    spans: list[tuple[int, int]]
    answer_start: int | None
    drops: list[float]
    weights: list[float]


def parity_traces(tokenizer: PreTrainedTokenizerBase, n: int = 10) -> list[IdTrace]:
    """The bundled examples, then gold gsm_symbolic solutions, as chat-template ids; each without and
    with the end-of-turn token."""
    texts = [*load_examples(), *(gsm_traces(n - 4) if n > 4 else [])][:n]
    traces = []
    for k, trace in enumerate(texts):
        messages = [{"role": "user", "content": trace.prompt}] if isinstance(trace.prompt, str) else trace.prompt
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        completion_ids = tokenizer(trace.completion, add_special_tokens=False).input_ids
        traces.append(IdTrace(f"{k}", prompt_ids, completion_ids))
        traces.append(IdTrace(f"{k}+eot", prompt_ids, [*completion_ids, tokenizer.eos_token_id]))
    return traces


def authors_module() -> Any:
    from aligntune.backends.trl.rl.counterfact_grpo import custom_trainer

    return custom_trainer


def authors(module: Any, model: Any, tokenizer: PreTrainedTokenizerBase, trace: IdTrace) -> Outcome:
    """The authors' functions on one trace, as their trainer calls them (one row, no padding).

    `compute_batched_counterfactual_importance` returns only the normalized importance; its spans,
    answer start and scores are read from its own locals as it returns (a trace hook on that one
    function, which changes nothing it computes).
    """
    prompt_len = len(trace.prompt_ids)
    ids = torch.tensor([trace.prompt_ids + trace.completion_ids])
    seen: dict[str, Any] = {}
    code = module.compute_batched_counterfactual_importance.__code__

    def on_return(frame: Any, event: str, _arg: Any) -> Any:
        if event == "return":
            seen.update(frame.f_locals)
        return on_return

    def on_call(frame: Any, event: str, _arg: Any) -> Any:
        # Only the authors' function is traced, and only its return (no line events): cheap.
        if frame.f_code is not code:
            return None
        frame.f_trace_lines = False
        return on_return

    sys.settrace(on_call)
    try:
        importance, _ = module.compute_batched_counterfactual_importance(model, tokenizer, ids, prompt_len, 10)
    finally:
        sys.settrace(None)
    weights = module.compute_soft_weights(
        importance[0], prompt_len, tokenizer=tokenizer, input_ids=ids, **AUTHORS_WEIGHTS
    )
    info = seen["sample_spans_info"][0]
    scores = seen.get("sample_scores", {}).get(0)  # absent: no forward pass (no span or no answer token)
    spans = [(s - prompt_len, e - prompt_len) for s, e in info["spans"]]
    drops = [scores["baseline"] - scores["masked"][i] for i in range(len(spans))] if scores else []
    return Outcome(spans, info["reasoning_end"] - prompt_len, drops, [float(w) for w in weights[prompt_len:]])


def ccapo_side(scorer: Scorer, traces: Sequence[IdTrace], config: ScoringConfig) -> list[Outcome]:
    results = scorer.score([t.as_trace() for t in traces], config)
    return [
        Outcome(
            [(s.token_start, s.token_end) for s in r.spans],
            r.answer.token_start if r.answer else None,
            [s.drop for s in r.spans],
            list(r.token_weights),
        )
        for r in results
    ]


def load(model_dir: str | None = None) -> tuple[Any, PreTrainedTokenizerBase]:
    path = model_dir or str(ensure_default_model())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def compare(theirs: Outcome, ours: Outcome) -> dict[str, Any]:
    """How far `ours` is from the authors' `theirs` on one trace. "top" says whether our highest-weighted
    reasoning token is one of theirs (None where their reasoning weights are flat: no span to find)."""
    shared = {span: drop for span, drop in zip(ours.spans, ours.drops, strict=True)}
    drop_diffs = [abs(shared[s] - d) for s, d in zip(theirs.spans, theirs.drops, strict=True) if s in shared]
    a, b = np.asarray(theirs.weights), np.asarray(ours.weights)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.allclose(a, b))
    reasoning = slice(0, theirs.answer_start)
    top = None
    if a[reasoning].size and a[reasoning].max() - a[reasoning].min() > 1e-6:
        top = bool(a[reasoning][b[reasoning].argmax()] >= a[reasoning].max() - 1e-6)
    return {
        "spans": theirs.spans == ours.spans,
        "answer": ours.answer_start is None or theirs.answer_start == ours.answer_start,
        "drop_diff": max(drop_diffs, default=0.0),
        "weight_diff": float(np.abs(a - b).max()),
        "corr": corr,
        "top": top,
        "mean_theirs": float(a.mean()),
        "mean_ours": float(b.mean()),
    }


def table(first: str, groups: dict[str, list[dict[str, Any]]]) -> None:
    """One markdown row per group and per subset (all traces; those that end in end of turn)."""
    print(
        f"| {first} | traces | spans identical | answer start identical | max drop diff (shared spans) "
        "| max weight diff | weight corr. mean (min) | top token theirs | mean weight, authors / ccapo |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in groups.items():
        for label, pick in (("all", rows), ("with end of turn", rows[1::2])):
            n = len(pick)
            spans, answers = sum(r["spans"] for r in pick), sum(r["answer"] for r in pick)
            tops = [r["top"] for r in pick if r["top"] is not None]
            print(
                f"| {name} | {label} ({n}) | {spans}/{n} | {answers}/{n} "
                f"| {max(r['drop_diff'] for r in pick):.1e} | {max(r['weight_diff'] for r in pick):.2f} "
                f"| {np.mean([r['corr'] for r in pick]):.2f} ({min(r['corr'] for r in pick):.2f}) "
                f"| {sum(tops)}/{len(tops)} "
                f"| {np.mean([r['mean_theirs'] for r in pick]):.2f} / {np.mean([r['mean_ours'] for r in pick]):.2f} |"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=10, help="texts (each scored with and without end of turn)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, tokenizer = load()
    module = authors_module()
    traces = parity_traces(tokenizer, args.traces)
    theirs = [authors(module, model, tokenizer, t) for t in traces]
    scorer = Scorer(model, tokenizer)
    configured = {name: ccapo_side(scorer, traces, config) for name, config in CONFIGS.items()}
    table("configuration", {n: [compare(t, o) for t, o in zip(theirs, r, strict=True)] for n, r in configured.items()})

    print("\nOne rule at a time: the authors' segmenter, answer window, mask token and weight mapping, one of them")
    print("swapped for ccapo's (bench/paper_rules.py)\n")
    mixed = paper_rules.rows(scorer, [t.as_trace() for t in traces])
    # The row with all four of ccapo's choices recombines what ccapo's own path computes: it must agree.
    pairs = zip(mixed[paper_rules.ALL_OURS], configured["ccapo paper.yaml"], strict=True)
    gap = max(np.abs(np.subtract(m.weights, o.weights)).max() for m, o in pairs)
    if gap > 1e-4:
        raise SystemExit(f"the recombined row is {gap:.1e} from ccapo's own weights: bench/paper_rules.py is wrong")
    table(
        "ccapo's rule for",
        {
            name: [compare(t, Outcome(m.spans, None, m.drops, m.weights)) for t, m in zip(theirs, rows, strict=True)]
            for name, rows in mixed.items()
        },
    )


if __name__ == "__main__":
    main()
