"""Is one model really better than another on the same faces? A paired comparison.

Two models read the same test faces, so their errors are paired: the difference in accuracy
is carried only by the faces one gets right and the other wrong. Two tests say whether it
is larger than chance, for a difference on the selection split (PublicTest) or any other
labelled set read by both:

- McNemar's exact test: under "no difference", each discordant face is equally likely to
  favour either model, so the count favouring B is Binomial(discordant, 1/2);
- a paired bootstrap interval for B's accuracy minus A's: faces resampled with replacement,
  both models' outcomes kept together (drawn as one multinomial over the four outcome
  kinds, which is the same resampling without materialising the indices).

Offline only: pure functions over arrays of outcomes, no model or file is read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest


def paired_difference(
    a_right: np.ndarray,
    b_right: np.ndarray,
    *,
    n_boot: int = 20000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """B's rate of success minus A's on the same items, with McNemar's p and a bootstrap CI.

    `a_right` and `b_right` are booleans, one per item, in the same order (True where the
    model read the item as wanted). Returns the counts, each rate, the difference, the
    `level` bootstrap percentile interval of the difference and McNemar's two-sided exact p.
    """
    a = np.asarray(a_right, dtype=bool)
    b = np.asarray(b_right, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"outcomes must be two 1-D arrays of one length, got {a.shape}, {b.shape}")
    if not len(a):
        raise ValueError("no items to compare")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    n = len(a)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(b & ~a))
    both = int(np.sum(a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue)
    rng = np.random.default_rng(seed)
    kinds = np.array([both, only_a, only_b, n - both - discordant], dtype=np.float64) / n
    draws = rng.multinomial(n, kinds, size=n_boot)
    diffs = (draws[:, 2] - draws[:, 1]) / n
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(diffs, [tail, 1.0 - tail])
    return {
        "n": n,
        "a": float(a.mean()),
        "b": float(b.mean()),
        "difference": (only_b - only_a) / n,
        "ci": [float(lo), float(hi)],
        "level": level,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": p,
    }


def describe(d: dict[str, Any], unit: str = "points") -> str:
    """One line: "+0.72 points (95 % CI -0.31 to +1.75; McNemar p 0.17; 61 vs 87 faces)"."""
    lo, hi = (100 * x for x in d["ci"])
    return (
        f"{100 * d['difference']:+.2f} {unit} ({100 * d['level']:.0f} % CI {lo:+.2f} to "
        f"{hi:+.2f}; McNemar p {d['mcnemar_p']:.3g}; right only by A {d['only_a']}, "
        f"only by B {d['only_b']}, of {d['n']})"
    )
