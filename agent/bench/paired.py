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

Offline only. Two sets of photo predictions written by `emotion-agent evaluate-faces
--predictions` (the same labels file read with two models) are compared photo by photo:

    python -m agent.bench.paired A.csv B.csv [--by COLUMN]...

A photo counts as right where its predicted class is its labelled expression; `--by
expression` gives each class's recall (for example smiles read as happy), `--by gender`
each group's accuracy, paired.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
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


def read_predictions(path: Path) -> dict[str, dict[str, str]]:
    """file -> row of a predictions CSV (evaluate-faces --predictions); ValueError if unusable."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"file", "expression", "predicted"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: no column {', '.join(sorted(missing))}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    by_file = {r["file"]: r for r in rows}
    if len(by_file) != len(rows):
        raise ValueError(f"{path}: a file appears more than once")
    return by_file


def compare_predictions(
    a: dict[str, dict[str, str]], b: dict[str, dict[str, str]], by: Sequence[str] = ()
) -> dict[str, Any]:
    """Paired differences (B - A) overall and per value of each `by` column, over the photos
    both files read with the same label; ValueError when they do not cover the same photos."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the two files cover different photos ({len(only)}, e.g. {only[0]})")
    files = sorted(a)
    for f in files:
        if a[f]["expression"] != b[f]["expression"]:
            raise ValueError(f"{f}: labelled {a[f]['expression']} in one, "
                             f"{b[f]['expression']} in the other")  # fmt: skip
    right_a = np.array([a[f]["predicted"] == a[f]["expression"] for f in files])
    right_b = np.array([b[f]["predicted"] == b[f]["expression"] for f in files])
    out: dict[str, Any] = {"overall": paired_difference(right_a, right_b), "by": {}}
    for column in by:
        if column not in a[files[0]]:
            raise ValueError(f"no column {column!r} in the predictions")
        values = np.array([a[f].get(column) or "" for f in files])
        out["by"][column] = {
            v: paired_difference(right_a[values == v], right_b[values == v])
            for v in sorted(set(values))
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("a", type=Path, metavar="A.csv", help="evaluate-faces --predictions")
    p.add_argument("b", type=Path, metavar="B.csv", help="the same photos, another model")
    p.add_argument("--by", action="append", default=[], metavar="COLUMN")
    args = p.parse_args(argv)
    try:
        report = compare_predictions(read_predictions(args.a), read_predictions(args.b), args.by)
    except ValueError as exc:
        print(f"paired: {exc}", file=sys.stderr)
        return 2
    print(f"B = {args.b.name} against A = {args.a.name}, photos read right (B - A):")
    print(f"- overall: {describe(report['overall'], 'points of accuracy')}")
    for column, values in report["by"].items():
        for value, d in values.items():
            print(f"- {column}={value}: {describe(d)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
