"""How a drop is estimated: the names `ScoringConfig.estimator` takes.

- exact: every span's counterfactual is computed (`engine.py`, checked against `reference.py`);
- gradient (deprecated): a first-order approximation of all drops at once from one forward and one
  backward pass (`gradient.py`);
- refine (deprecated): exact drops of coarse blocks of spans, then exact drops of the spans inside
  the highest-drop blocks under a budget (`refine.py`); the other spans share their block's drop;
- horizon: each span's counterfactual recomputes only the tokens within a window after it, a tail
  before the answer and the answer, the rest keep their base-pass keys and values (`horizon.py`);
  optionally the spans with the largest estimated drops are then made exact.
"""

from __future__ import annotations

from typing import Literal

Estimator = Literal["exact", "gradient", "refine", "horizon"]
ESTIMATORS: tuple[Estimator, ...] = ("exact", "gradient", "refine", "horizon")
# Slower than horizon on long traces and further from exact (docs/long-reasoning.md): they load with a
# FutureWarning for one release, then go.
DEPRECATED_ESTIMATORS: tuple[Estimator, ...] = ("gradient", "refine")
