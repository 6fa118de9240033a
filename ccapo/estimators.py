"""How a drop is estimated: the names `ScoringConfig.estimator` takes.

- exact: every span's counterfactual is computed (`engine.py`, checked against `reference.py`);
- gradient: a first-order approximation of all drops at once from one forward and one backward
  pass (`gradient.py`); approximate, never the default;
- refine: exact drops of coarse blocks of spans, then exact drops of the spans inside the
  highest-drop blocks under a budget (`refine.py`); the other spans share their block's drop.
"""

from __future__ import annotations

from typing import Literal

Estimator = Literal["exact", "gradient", "refine"]
ESTIMATORS: tuple[Estimator, ...] = ("exact", "gradient", "refine")
