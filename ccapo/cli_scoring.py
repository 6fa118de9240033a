"""The scoring flags of `ccapo score`, `demo` and `bench`, and the `ScoringConfig` they make.

Every default is `ScoringConfig`'s own, so the command line scores as the library does when no
flag is given.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from pydantic import ValidationError

from ccapo.config import PRESETS, ScoringConfig
from ccapo.interventions import INTERVENTIONS
from ccapo.weights import Scheme

SEGMENTERS = ("calc", "sentence", "line", "window")
SCHEMES = get_args(Scheme)
_DEFAULTS = ScoringConfig()
# `--horizon-NAME`: the horizon estimator's knobs (ScoringConfig.horizon_NAME), with what each counts.
HORIZON_KNOBS = (
    ("window", "TOKENS", "suffix tokens recomputed after each span"),
    ("tail", "TOKENS", "tokens right before the answer recomputed too"),
    ("verify", "SPANS", "spans per trace then scored exactly, largest estimated drop first"),
)


def scoring_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--preset",
        choices=PRESETS,
        help='"aligntune": what the authors\' released code computes (their segmenter, answer window, pad-id '
        "mask and weights); it fixes --segmenter, --intervention, --target and --placeholder",
    )
    # Unset flags stay out of the config, so its defaults (or the preset's) apply.
    group.add_argument("--segmenter", choices=SEGMENTERS, help=f"default: {_DEFAULTS.segmenter}")
    group.add_argument("--intervention", choices=INTERVENTIONS, help=f"default: {_DEFAULTS.intervention}")
    group.add_argument("--target", choices=("completion", "reference"), help=f"default: {_DEFAULTS.target}")
    group.add_argument("--max-spans", type=int, default=_DEFAULTS.max_spans)
    group.add_argument("--placeholder", help='"pad" intervention: replacement token text')
    group.add_argument(
        "--scheme",
        choices=SCHEMES,
        help=f'token weight scheme (default {_DEFAULTS.weights.scheme}: mean weight 1; "paper": the paper\'s mapping; '
        'under --preset aligntune: "paper")',
    )


def estimator_args(parser: argparse.ArgumentParser) -> None:
    """How drops are estimated; the horizon knobs are None unless given, so they can be refused without it."""
    group = parser.add_argument_group("estimator")
    group.add_argument(
        "--estimator",
        dest="drop_estimator",  # `ccapo bench --estimator` names a second estimator to compare, not this one
        choices=("exact", "horizon"),
        default=_DEFAULTS.estimator,
        help="exact: one full counterfactual pass per span; horizon: each span recomputes a window after it, "
        "a tail before the answer and the answer (for traces of thousands of tokens)",
    )
    for name, metavar, unit in HORIZON_KNOBS:
        group.add_argument(
            f"--horizon-{name}",
            type=int,
            metavar=metavar,
            help=f"{unit} (default {getattr(_DEFAULTS, f'horizon_{name}')}; needs --estimator horizon)",
        )


def scoring_config(args: argparse.Namespace) -> ScoringConfig:
    given = {name: getattr(args, name) for name in ("preset", "segmenter", "intervention", "target", "placeholder")}
    fields: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    fields["max_spans"] = args.max_spans
    if args.scheme:
        fields["weights"] = {"scheme": args.scheme}
    if hasattr(args, "drop_estimator"):
        fields["estimator"] = args.drop_estimator
        for name, _, _ in HORIZON_KNOBS:
            if getattr(args, f"horizon_{name}") is not None:
                fields[f"horizon_{name}"] = getattr(args, f"horizon_{name}")
    return ScoringConfig(**fields)


def check_scoring_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error (2) on a horizon knob without the horizon estimator, or on any value
    `ScoringConfig` refuses."""
    if getattr(args, "drop_estimator", "horizon") != "horizon":
        knobs = [f"--horizon-{name}" for name, _, _ in HORIZON_KNOBS if getattr(args, f"horizon_{name}") is not None]
        if knobs:
            parser.error(f"{', '.join(knobs)} set the horizon estimator: add --estimator horizon")
    try:
        scoring_config(args)
    except ValidationError as err:
        parser.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))
