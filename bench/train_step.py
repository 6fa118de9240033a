"""Training-step time, broken down, with and without counterfactual weighting (a benchmark, not a test).

Arms, run one after another in this process from the same seed (so step 1's rollouts are identical):
  uniform    no scoring: the GRPO/DAPO step itself
  engine     counterfactual weights from the fast engine (the trainer's default)
  reference  counterfactual weights from the naive reference engine (1 + N full passes per trace)
The scoring overhead is scoring time over the rest of the step. Target: the engine adds <= 25%.

    python bench/train_step.py                      # default model, CPU, 2 prompts x 4 samples, 96 tokens
    python bench/train_step.py --steps 3 counterfactual.scoring.segmenter=window model=DIR   # any TrainConfig override

By default the answer scored is the reference answer (`counterfactual.scoring.target=reference`), so every sample
is scored even when the policy never writes "####": the worst case for the overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from ccapo_trainer.config import load_config
from ccapo_trainer.loop import Trainer
from ccapo_trainer.metrics import read_metrics
from rich.console import Console
from rich.table import Table

from ccapo.reference import reference_score
from ccapo.scorer import Scorer

ARMS = ("uniform", "engine", "reference")
DEFAULTS = [
    "dataset=gsm_symbolic",
    "dataset_kwargs={size: 50}",
    "prompts_per_step=2",
    "num_generations=4",
    "max_completion_length=96",
    "temperature=1.0",
    "top_p=1.0",
    "dynamic_sampling=false",
    "counterfactual.scoring={target: reference}",
    "micro_batch_size=8",
    "save_every=0",
    "learning_rate=1e-6",
]


def run_arm(arm: str, steps: int, overrides: list[str], output: Path) -> list[dict]:
    weighting = "uniform" if arm == "uniform" else "counterfactual"
    config = load_config(None, [*DEFAULTS, *overrides, f"steps={steps}", f"counterfactual.weighting={weighting}",
                                f"output_dir={output / arm}"])
    original = Scorer.compute
    if arm == "reference":
        Scorer.compute = lambda self, jobs, progress=None: reference_score(self.model, list(jobs))
    try:
        Trainer(config).train()
    finally:
        Scorer.compute = original
    return read_metrics(output / arm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="steps per arm (default 2)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--json", type=Path, help="also write the per-arm means as JSON")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="TrainConfig overrides")
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            records = run_arm(arm, args.steps, args.overrides, Path(tmp))
            mean = lambda key: statistics.fmean(r.get(key, 0.0) for r in records)  # noqa: E731, B023
            rows[arm] = {
                "generate_s": mean("time/generate_s"),
                "score_s": mean("ccapo/score_seconds"),
                "update_s": mean("time/update_s"),
                "step_s": mean("time/step_s"),
                "overhead_pct": mean("scoring_overhead_pct"),
                "scored_share": mean("ccapo/weights/scored_share"),
                "completion_tokens": mean("completion_length/mean"),
            }

    table = Table(title=f"training step, mean of {args.steps} steps per arm")
    for column in ("arm", "generate s", "score s", "update s", "step s", "scoring overhead", "scored"):
        table.add_column(column, justify="right")
    for arm, row in rows.items():
        table.add_row(arm, f"{row['generate_s']:.2f}", f"{row['score_s']:.2f}", f"{row['update_s']:.2f}",
                      f"{row['step_s']:.2f}", f"{row['overhead_pct']:.1f}%", f"{row['scored_share']:.0%}")
    console = Console()
    console.print(table)
    if "engine" in rows and "reference" in rows and rows["engine"]["score_s"] > 0:
        console.print(f"engine scores {rows['reference']['score_s'] / rows['engine']['score_s']:.2f}x faster than "
                      "the reference")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
