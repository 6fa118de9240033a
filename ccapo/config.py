"""What to probe and how: the scoring configuration a request or a training run carries."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ccapo.estimators import DEPRECATED_ESTIMATORS, Estimator
from ccapo.interventions import Intervention
from ccapo.spans import SegmenterName
from ccapo.weights import WeightConfig

# Each probed span costs one forward-pass row: the most any trace may have, custom spans included.
MAX_SPANS = 256

Preset = Literal["aligntune"]
PRESETS: tuple[str, ...] = get_args(Preset)
# What the "aligntune" preset fixes: the authors' segmenter, answer window and mask token (the pad id)
# replace these fields, so any other value would be silently ignored; it is an error instead.
_PRESET_FIXED = {"segmenter": "calc", "intervention": "pad", "target": "completion", "placeholder": None}


class ScoringConfig(BaseModel):
    """How traces are segmented, intervened on and turned into weights.

    The default intervention is "delete": on the default model it separates calculation lines from
    filler lines best (docs/scoring.md, "Faithfulness"). "pad" replaces span tokens with `placeholder` (a
    token id or a string that encodes to one token); by default a neutral token, never EOS or the
    end-of-turn token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    preset: Preset | None = Field(
        None,
        description='"aligntune": what the authors\' released code (aligntune 0.1.28) computes on the same token '
        "ids: their segmenter, answer window, mask token (the pad id) and weight mapping (docs/method.md). "
        "max_spans, the span lengths, the estimator and the weight settings stay yours; the weight scheme "
        'defaults to "paper" (their counterfactual mode)',
    )
    segmenter: SegmenterName = Field(
        "calc",
        description='how the reasoning splits into spans: "calc" (arithmetic spans, then sentences), "sentence", '
        '"line", "window" (fixed token windows) or "custom" (the trace\'s own spans)',
    )
    intervention: Intervention = Field(
        "delete",
        description='how a span is masked: "delete" (removed), "pad" (each token replaced by `placeholder`) or '
        '"attention" (kept, but hidden from every later position)',
    )
    target: Literal["completion", "reference"] = Field(
        "completion", description="score the completion's own answer, or the trace's reference_answer"
    )
    max_spans: int = Field(10, ge=1, le=MAX_SPANS, description="spans a segmenter may probe per trace")
    min_span_tokens: int = Field(5, ge=1, description="sentences and lines shorter than this are not probed")
    max_span_tokens: int = Field(50, ge=1, description="spans longer than this are not probed (windows excepted)")
    window_tokens: int = Field(16, ge=1, description='"window" segmenter: tokens per window (at least)')
    placeholder: int | str | None = Field(None, description='"pad" intervention: replacement token (id or text)')
    estimator: Estimator = Field(
        "exact",
        description='"exact" (the default): one counterfactual pass per span; "horizon": each span recomputes '
        "only `horizon_window` tokens after it, `horizon_tail` before the answer and the answer, then the "
        "`horizon_verify` largest estimated drops are made exact; deprecated (slower than horizon and further "
        'from exact): "gradient", a first-order approximation of every drop from one forward and one backward '
        'pass, and "refine", exact drops of coarse blocks, then of the spans inside the highest-drop blocks '
        "within `refine_budget`",
    )
    refine_budget: float = Field(
        0.5,
        gt=0,
        le=1,
        description='"refine": share of the exact estimator\'s feed tokens it may spend in all (at least one '
        "block of all spans; 1.0 gives the exact pass)",
    )
    horizon_window: int = Field(
        256, ge=0, description='"horizon": suffix tokens recomputed after each span; the rest keep their base-pass KV'
    )
    horizon_tail: int = Field(
        0,
        ge=0,
        description='"horizon": tokens right before the answer recomputed too, so the answer reads states that '
        "saw the intervention",
    )
    horizon_verify: int = Field(
        0, ge=0, description='"horizon": spans per trace then scored exactly, largest estimated |drop| first'
    )
    weights: WeightConfig = Field(default_factory=WeightConfig, description="how drops become token weights")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """A preset fills in the fields it fixes and the "paper" scheme; a contradicting value is an error."""
        if not isinstance(data, Mapping) or data.get("preset") is None:
            return data
        data = dict(data)
        for name, value in _PRESET_FIXED.items():
            if data.get(name, value) != value:
                raise ValueError(
                    f'preset {data["preset"]!r} fixes {name} to {value!r} (the authors\' rule), so {name}='
                    f"{data[name]!r} would be ignored: remove {name}, or drop the preset"
                )
            data[name] = value
        weights = data.get("weights")
        if isinstance(weights, WeightConfig):
            scheme_set = "scheme" in weights.model_fields_set
            weights = weights.model_dump()
        else:
            weights = dict(weights or {})
            scheme_set = "scheme" in weights
        if not scheme_set:
            weights["scheme"] = "paper"
        data["weights"] = weights
        return data

    @model_validator(mode="after")
    def _lengths(self) -> ScoringConfig:
        if self.min_span_tokens > self.max_span_tokens:
            raise ValueError(
                f"min_span_tokens ({self.min_span_tokens}) exceeds max_span_tokens ({self.max_span_tokens})"
            )
        return self

    @model_validator(mode="after")
    def _deprecated_estimator(self) -> ScoringConfig:
        if self.estimator in DEPRECATED_ESTIMATORS:
            warnings.warn(
                f'estimator "{self.estimator}" is deprecated and stops loading in the next release: "horizon" is '
                "faster and closer to exact on long traces (see the long reasoning page of the docs)",
                FutureWarning,
                stacklevel=2,
            )
        return self

    def estimator_settings(self) -> dict[str, Any]:
        """The fields an `EngineJob` takes from this config: how its drops are estimated."""
        return {
            "estimator": self.estimator,
            "refine_budget": self.refine_budget,
            "horizon_window": self.horizon_window,
            "horizon_tail": self.horizon_tail,
            "horizon_verify": self.horizon_verify,
        }
