"""Token weights for a batch given as token ids: the framework-free core the trainer and the RL adapters share.

RL stacks hold completions as padded id tensors; `score_token_batch` scores them as they are (ids in,
never re-tokenized text) with a `ccapo.Scorer`, a `ccapo_client.RemoteScorer` or a
`ccapo_client.RayScorer` and returns a `(B, T)`
weight tensor aligned to the caller's completion tokens. Rows that cannot be scored (no answer
marker), rows the scorer rejects, rows whose request part failed through its retries (a remote
scorer's `PartialScoreError`), and a scorer that fails outright all leave uniform weights: one
bad completion or one slow part never costs its neighbours their weights, and a training step
never stops for it.
The scoring config travels as a mapping (or anything with pydantic's `model_dump()`), and the
scorer validates it: this module needs torch only, not ccapo.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

logger = logging.getLogger(__name__)

Weighting = Literal["uniform", "counterfactual", "inverted", "random"]
WEIGHTINGS: tuple[Weighting, ...] = ("uniform", "counterfactual", "inverted", "random")
# The paper's control arms: its weight mapping with the importance ranking reversed, or drawn at random.
CONTROLS = ("inverted", "random")
IdRows = Sequence[Sequence[int]] | torch.Tensor


def arm_scheme(weighting: Weighting | None, scheme: str | None) -> str | None:
    """The weight scheme the scorer applies for arm `weighting` when the config names `scheme` (None: names none).

    The one place where the arm decides the scheme. "inverted" and "random" are the paper scheme's
    controls and apply their own scheme: `scheme` may be unset, "paper" (the mapping they control)
    or the arm's own name; any other scheme contradicts the arm. "counterfactual" applies `scheme`
    (None: the caller's default), which must not be a control's or "uniform": those are arms.
    "uniform" scores nothing, so any scheme goes; None (no arm) keeps `scheme` as it is.
    """
    if weighting in CONTROLS:
        if scheme not in (None, "paper", weighting):
            raise ValueError(
                f"weighting {weighting!r} applies the paper scheme's {weighting} control, which contradicts "
                f'scheme {scheme!r}: leave scheme unset (or "paper"), or use weighting "counterfactual" '
                f"to apply scheme {scheme!r}"
            )
        return weighting
    if weighting == "counterfactual" and scheme in (*CONTROLS, "uniform"):
        raise ValueError(f"scheme {scheme!r} is an arm of its own: set weighting {scheme!r} instead")
    return scheme


class TraceScorer(Protocol):
    """`ccapo.Scorer` or `ccapo_client.RemoteScorer`: traces and a config in, results with token weights out."""

    def score(self, traces: Sequence[Mapping[str, Any]], config: Any = None) -> Sequence[Any]: ...


@dataclass
class BatchWeights:
    """`weights` is (B, T) float32 (1.0 on padding and on rows left uniform).

    Per row, `results` holds the scorer's result (None when scoring was skipped or failed) and
    `errors` says why scoring failed (None when it did not; an unscorable trace is not an error);
    `scorer_error` is set when the scorer itself failed, not one row; `refused` lists the rows the
    scorer refused as invalid (a trace over a server's limits, say), a subset of the failed ones.
    `traces` counts the traces sent to the scorer (one per distinct row not skipped); `duplicates`
    the rows that took the result of an identical row's trace.
    """

    weights: torch.Tensor
    results: list[Any | None]
    errors: list[str | None]
    scorer_error: str | None = None  # the scorer itself failed (server down, ...): no row got weights
    traces: int = 0
    duplicates: int = 0
    # Rows the scorer refused, e.g. a trace over a scoring server's limits (their errors say which).
    refused: list[int] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(error is not None for error in self.errors)

    def metrics(self, mask: torch.Tensor | None = None) -> dict[str, float]:
        """Weight statistics over real tokens, the share of rows scored, and the shares of weight mass on
        calculation spans and on all probed spans (the rest sits on unprobed tokens and the answer)."""
        mask = torch.ones_like(self.weights, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        real = self.weights[mask]
        if real.numel() == 0:
            return {}
        calc = torch.zeros_like(self.weights, dtype=torch.bool)
        probed = torch.zeros_like(calc)
        for row, result in enumerate(self.results):
            for span in getattr(result, "spans", None) or ():
                probed[row, span.token_start : span.token_end] = True
                if span.kind == "calc":
                    calc[row, span.token_start : span.token_end] = True
        total = real.sum().clamp(min=1e-12)
        scored_rows = torch.tensor([getattr(r, "status", None) == "ok" for r in self.results], dtype=torch.bool)
        scored = int(scored_rows.sum())
        on_scored = mask & scored_rows[:, None]
        return {
            "weights/mean": float(real.mean()),
            "weights/std": float(real.std()) if real.numel() > 1 else 0.0,
            "weights/min": float(real.min()),
            "weights/max": float(real.max()),
            "weights/calc_mass": float(self.weights[calc & mask].sum() / total),
            "weights/span_mass": float(self.weights[probed & mask].sum() / total),
            "weights/scored_share": scored / max(len(self.results), 1),
            # Where the weighting acts, and whether scored rows outweigh the rest (the paper's scheme: ~2x).
            "weights/probed_token_share": float((probed & mask).sum() / mask.sum()),
            "weights/mean_scored_rows": _mean(self.weights[on_scored]),
            "weights/mean_unscored_rows": _mean(self.weights[mask & ~on_scored]),
            "weights/failed": float(self.failed),
            "weights/refused": float(len(self.refused)),
            "weights/scored_traces": float(self.traces),
            "weights/skipped_duplicates": float(self.duplicates),
        }


def score_token_batch(
    scorer: TraceScorer | None,
    prompt_ids: IdRows,
    completion_ids: IdRows,
    *,
    prompt_mask: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
    weighting: Weighting | None = None,
    config: Mapping[str, Any] | Any = None,
    reference_answers: Sequence[str] | None = None,
    skip: Sequence[bool] | torch.Tensor | None = None,
) -> BatchWeights:
    """Score each (prompt, completion) pair and return weights aligned to the completion tokens.

    `prompt_ids` and `completion_ids` are lists of id lists or padded `(B, P)` / `(B, T)` tensors;
    with tensors, `prompt_mask` / `completion_mask` (1 on real tokens, left or right padding) say
    which ids are real. `weighting` is the arm: "uniform" scores nothing (and needs no scorer);
    "inverted" and "random" are the paper's controls, scored like "counterfactual" and mapped with
    their own schemes (`arm_scheme`); None applies `config`'s scheme as it is.
    `config` is a `ScoringConfig` or its fields as a mapping. `reference_answers` (one per row) are
    what `target="reference"` scores instead of the completion's answer. Rows where `skip` is true
    (e.g. rows whose advantage is 0, whose weights the loss never reads) keep uniform weights unscored;
    identical rows (prompt, completion and reference answer) are scored once and share the result.
    """
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    prompts = _rows(prompt_ids, prompt_mask)
    completions = _rows(completion_ids, completion_mask)
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions: give one prompt per completion")
    padded = isinstance(completion_ids, torch.Tensor)
    width = completion_ids.shape[1] if padded else max(map(len, completions), default=0)
    positions = _positions(completion_ids, completion_mask, completions)
    weights = torch.ones((len(completions), width), dtype=torch.float32)
    batch = BatchWeights(weights, [None] * len(completions), [None] * len(completions))
    if weighting == "uniform" or not completions:
        return batch
    if scorer is None:
        raise ValueError(f"weighting={weighting!r} needs a scorer (a ccapo.Scorer or a ccapo_client.RemoteScorer)")

    config = _arm_config(config, weighting)
    pending, copies = _distinct_rows(prompts, completions, reference_answers, skip)
    batch.traces, batch.duplicates = len(pending), len(copies)
    while pending:
        traces = [_trace(prompts[i], completions[i], reference_answers, i) for i in pending]
        try:
            results = scorer.score(traces, config)
        except ValueError as err:  # TraceError / InvalidRequestError name the trace at fault: drop it, score the rest
            index = getattr(err, "trace_index", None)
            if index is None or not 0 <= index < len(pending):
                _fail(batch, pending, err)
                break
            row = pending.pop(index)
            batch.errors[row] = str(err)
            batch.refused.append(row)  # the provider logs the first refusal; `weights/refused` counts them
            logger.debug("completion %d keeps uniform weights: %s", row, err)
            continue
        except Exception as err:
            partial = getattr(err, "results", None)  # ccapo_client.PartialScoreError: some parts were scored
            if not isinstance(partial, list) or len(partial) != len(pending):
                _fail(batch, pending, err)  # the scorer itself failed (server down, out of memory): nobody gets weights
                break
            causes = getattr(err, "errors", {})  # each failed trace's own part's error
            failed = [(i, row) for i, (row, result) in enumerate(zip(pending, partial, strict=True)) if result is None]
            logger.warning("%d of %d completions keep uniform weights: %s", len(failed), len(pending), err)
            for i, row in failed:
                cause = causes.get(i, err)
                batch.errors[row] = f"{type(cause).__name__}: {cause}"
            results = partial
        for row, result in zip(pending, results, strict=True):
            if result is None:
                continue
            values = list(result.token_weights)
            if len(values) != len(completions[row]):
                batch.errors[row] = f"{len(values)} weights for {len(completions[row])} completion tokens"
                continue
            batch.results[row] = result
            weights[row, positions[row]] = torch.tensor(values, dtype=torch.float32)
        break
    for row, source in copies.items():
        batch.results[row], batch.errors[row] = batch.results[source], batch.errors[source]
        weights[row, positions[row]] = weights[source, positions[source]]
    return batch


def _distinct_rows(
    prompts: list[list[int]],
    completions: list[list[int]],
    answers: Sequence[str] | None,
    skip: Sequence[bool] | torch.Tensor | None,
) -> tuple[list[int], dict[int, int]]:
    """The rows to score (the first of each distinct trace, skipped rows left out), and each
    duplicate row mapped to the row whose result it takes."""
    skipped = [False] * len(completions) if skip is None else [bool(s) for s in skip]
    if len(skipped) != len(completions):
        raise ValueError(f"{len(skipped)} skip flags for {len(completions)} completions: give one per completion")
    first: dict[tuple[Any, ...], int] = {}
    copies: dict[int, int] = {}
    for row in range(len(completions)):
        if skipped[row]:
            continue
        key = (tuple(prompts[row]), tuple(completions[row]), None if answers is None else answers[row])
        if key in first:
            copies[row] = first[key]
        else:
            first[key] = row
    return list(first.values()), copies


def _mean(values: torch.Tensor) -> float:
    """The mean, or 1.0 (the uniform weight) when there is nothing to average."""
    return float(values.mean()) if values.numel() else 1.0


def apply_token_weights(values: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token losses or advantages times their weights; `values` may be (B, T) or (B,) (broadcast over T).

    Where `mask` is 0 the value passes through unchanged, so padding keeps whatever the caller's
    own masking does with it.
    """
    values = values[:, None].expand_as(weights) if values.dim() == 1 else values
    if values.shape != weights.shape:
        raise ValueError(f"values {tuple(values.shape)} and weights {tuple(weights.shape)} must have the same shape")
    weights = weights.to(device=values.device, dtype=values.dtype)
    if mask is not None:
        weights = torch.where(mask.to(device=values.device, dtype=torch.bool), weights, torch.ones_like(weights))
    return values * weights


def _trace(prompt: list[int], completion: list[int], answers: Sequence[str] | None, row: int) -> dict[str, Any]:
    trace: dict[str, Any] = {"prompt_ids": prompt, "completion_ids": completion}
    if answers is not None:
        trace["reference_answer"] = answers[row]
    return trace


def _arm_config(config: Mapping[str, Any] | Any, weighting: Weighting | None) -> dict[str, Any]:
    """The scoring config as a plain dict (what both scorers take), with the scheme the arm applies."""
    fields = dict(config.model_dump(mode="json") if hasattr(config, "model_dump") else config or {})
    weights = fields.get("weights") or {}
    weights = weights.model_dump(mode="json") if hasattr(weights, "model_dump") else dict(weights)
    scheme = arm_scheme(weighting, weights.get("scheme"))
    if scheme is not None:
        fields["weights"] = {**weights, "scheme": scheme}
    return fields


def _rows(ids: IdRows, mask: torch.Tensor | None) -> list[list[int]]:
    if not isinstance(ids, torch.Tensor):
        if mask is not None:
            raise ValueError("a mask goes with padded id tensors; give lists of ids without one")
        return [[int(t) for t in row] for row in ids]
    if ids.dim() != 2:
        raise ValueError(f"token ids must be a (B, T) tensor, got shape {tuple(ids.shape)}")
    if mask is None:
        return ids.tolist()
    if mask.shape != ids.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and ids {tuple(ids.shape)} must have the same shape")
    keep = mask.to(torch.bool).cpu()
    return [row[m].tolist() for row, m in zip(ids.cpu(), keep, strict=True)]


def _positions(ids: IdRows, mask: torch.Tensor | None, rows: list[list[int]]) -> list[torch.Tensor]:
    """Where each row's real completion tokens sit in the (B, T) weight tensor."""
    if isinstance(ids, torch.Tensor) and mask is not None:
        return [m.nonzero()[:, 0] for m in mask.to(torch.bool).cpu()]
    return [torch.arange(len(row)) for row in rows]


def _fail(batch: BatchWeights, rows: list[int], err: Exception) -> None:
    # Logged once per outage by the WeightProvider; here only for debugging.
    logger.debug("scoring failed, %d completions keep uniform weights: %s: %s", len(rows), type(err).__name__, err)
    batch.scorer_error = f"{type(err).__name__}: {err}"
    for row in rows:
        batch.errors[row] = batch.scorer_error
