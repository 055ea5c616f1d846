"""The closed-form objectives of the adaptive-sweep benchmark (standard library only).

Not a benchmark itself. ``adaptive_sweep.py`` calls these functions directly, and
``_adaptive_airflow.py`` pastes this module's source at the top of the DAG file it runs, so the
trials that run in Airflow compute exactly what the direct planning calls see.

- :func:`hartmann6`: Hartmann-6 on ``[0, 1]^6``, minimised; optimum ``-3.32237`` at
  ``(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)``.
- :func:`mixed_hartmann`: a mixed 6-D variant in the project's search-space format
  (:data:`MIXED_SPACE`): ``x1..x4`` floats, ``x5`` an int on a grid of 21 points (``x5 / 20``),
  and ``shape`` a categorical of 4 values that sets Hartmann's 6th coordinate (so each category
  shifts the function by an offset that depends on the point).
- :func:`budgeted_hartmann`: :func:`mixed_hartmann` seen at a training budget ``b`` out of
  :data:`MAX_BUDGET`: ``f(x) + (1 - sqrt(b / B)) * (0.4 * x4 + 0.3 * z)``, with ``z`` in
  ``[-1, 1]`` a deterministic noise of the point and the budget. A small budget adds a bias that
  depends on the point (a slow learner looks worse early) and noise; both vanish at ``B``.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

HARTMANN_OPTIMUM = -3.32237
HARTMANN_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
_ALPHA = (1.0, 1.2, 3.0, 3.2)
_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)

#: Hartmann-6 in the search-space format: six floats on [0, 1].
HARTMANN_SPACE: dict[str, Any] = {
    f"x{i}": {"distribution": "float", "low": 0.0, "high": 1.0} for i in range(1, 7)
}
#: The mixed variant: four floats, an int on a grid, a categorical.
SHAPES = {"a": 0.1, "b": 0.35, "c": 0.65, "d": 0.9}
MIXED_SPACE: dict[str, Any] = {
    **{f"x{i}": {"distribution": "float", "low": 0.0, "high": 1.0} for i in range(1, 5)},
    "x5": {"distribution": "int", "low": 0, "high": 20},
    "shape": list(SHAPES),
}
#: The budget at which :func:`budgeted_hartmann` is the exact objective.
MAX_BUDGET = 27


def hartmann6(x: tuple[float, ...] | list[float]) -> float:
    """Hartmann-6 at ``x`` in ``[0, 1]^6`` (minimum ``-3.32237``)."""
    total = 0.0
    for alpha, a_row, p_row in zip(_ALPHA, _A, _P):
        total += alpha * math.exp(-sum(a * (xi - p) ** 2 for a, xi, p in zip(a_row, x, p_row)))
    return -total


def hartmann_of(hparams: Mapping[str, Any]) -> float:
    """:func:`hartmann6` of a trial of :data:`HARTMANN_SPACE`."""
    return hartmann6([float(hparams[f"x{i}"]) for i in range(1, 7)])


def mixed_point(hparams: Mapping[str, Any]) -> list[float]:
    """The Hartmann-6 point of a trial of :data:`MIXED_SPACE`."""
    return [float(hparams[f"x{i}"]) for i in range(1, 5)] + [
        int(hparams["x5"]) / 20.0,
        SHAPES[str(hparams["shape"])],
    ]


def mixed_hartmann(hparams: Mapping[str, Any]) -> float:
    """The mixed variant's value at a trial's hparams."""
    return hartmann6(mixed_point(hparams))


def _noise(hparams: Mapping[str, Any], budget: float) -> float:
    """A deterministic number in [-1, 1] of the point and the budget."""
    text = json.dumps({**hparams, "budget": budget}, sort_keys=True)
    return zlib.crc32(text.encode()) / 0x7FFFFFFF - 1.0


def budgeted_hartmann(hparams: Mapping[str, Any], budget: float) -> float:
    """:func:`mixed_hartmann` as seen at ``budget`` (exact at :data:`MAX_BUDGET`)."""
    shrink = 1.0 - math.sqrt(min(float(budget), MAX_BUDGET) / MAX_BUDGET)
    return mixed_hartmann(hparams) + shrink * (0.4 * float(hparams["x4"]) + 0.3 * _noise(hparams, budget))
