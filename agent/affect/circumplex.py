"""Facial expressions placed on the valence-arousal circumplex.

Coordinates are the pleasure (valence) and arousal values that Russell & Mehrabian
(1977, J. Res. Personality 11:273-294, table 2) measured for these emotion terms, on a
-1..1 scale; neutral sits at the origin. A face's valence and arousal are the
probability-weighted means of its expression's coordinates; a window's are the
quality-weighted means over its faces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.events import EXPRESSIONS

#                      angry  disgust fear   happy  sad    surprise neutral
VALENCE = np.array([-0.51, -0.60, -0.64, 0.81, -0.63, 0.40, 0.0])
AROUSAL = np.array([0.59, 0.35, 0.60, 0.51, -0.27, 0.67, 0.0])


def mean_expression(
    probabilities: Sequence[Sequence[float]], quality: Sequence[float]
) -> np.ndarray | None:
    """Quality-weighted mean of per-face probabilities (7,), or None with no usable face."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(EXPRESSIONS))
    w = np.asarray(quality, dtype=np.float64)
    if p.shape[0] == 0 or w.sum() <= 0:
        return None
    return (p * w[:, None]).sum(axis=0) / w.sum()


def valence_arousal(expression: np.ndarray) -> tuple[float, float]:
    """Valence and arousal in [-1, 1] of an expression distribution."""
    return float(expression @ VALENCE), float(expression @ AROUSAL)
