"""Is one model really better than another on the same faces? A paired comparison.

Two models read the same test faces, so their errors are paired: the difference in accuracy
is carried only by the faces one gets right and the other wrong. Two tests say whether it
is larger than chance, for a difference on the selection split (PublicTest) or any other
labelled set read by both:

- McNemar's exact test: under "no difference", each discordant face is equally likely to
  favour either model, so the count favouring B is Binomial(discordant, 1/2);
- its exact interval for B's accuracy minus A's, from the share of discordant faces that
  favour B (Clopper-Pearson), so that interval and test always agree.

Offline only. Two sets of photo predictions written by `emotion-agent evaluate-faces
--predictions` (the same labels file read with two models) are compared photo by photo:

    python -m agent.bench.paired A.csv B.csv [--by COLUMN]...

A photo counts as right where its predicted class is its labelled expression; `--by
expression` gives each class's recall (for example smiles read as happy), `--by gender`
each group's accuracy, paired.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from agent.bench.faces_eval import read_labels
from agent.events import EXPRESSIONS


def paired_difference(
    a_right: np.ndarray, b_right: np.ndarray, *, level: float = 0.95
) -> dict[str, Any]:
    """B's rate of success minus A's on the same items, with McNemar's exact p and interval.

    `a_right` and `b_right` are booleans, one per item, in the same order (True where the
    model read the item as wanted). Returns the counts, each rate, the difference, McNemar's
    two-sided exact p and a `level` interval for the difference: the exact (Clopper-Pearson)
    interval of the share of discordant items that favour B, rescaled to the difference and
    given the number of discordant items. It is the test's own interval (it leaves out 0
    exactly when p < 1 - level), where a bootstrap one would be too narrow for the few
    discordant items of a small set. None when no item is read differently.
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
    discordant = only_a + only_b
    p, ci = 1.0, None
    if discordant:
        test = binomtest(only_b, discordant, 0.5)
        p = float(test.pvalue)
        share = test.proportion_ci(confidence_level=level, method="exact")
        ci = [discordant / n * (2 * share.low - 1), discordant / n * (2 * share.high - 1)]
    return {
        "n": n,
        "a": float(a.mean()),
        "b": float(b.mean()),
        "difference": (only_b - only_a) / n,
        "ci": ci,
        "level": level,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": p,
    }


def describe(d: dict[str, Any], unit: str = "points") -> str:
    """One line, e.g. "+7.84 points (95 % CI -0.00 to +15.69; McNemar p 0.125; right only
    by A 0, only by B 4, of 51)"; "read the same" where no item is read differently."""
    counts = f"right only by A {d['only_a']}, only by B {d['only_b']}, of {d['n']}"
    if d["ci"] is None:
        return f"+0.00 {unit} (every item read the same by both; {counts})"
    lo, hi = (100 * x for x in d["ci"])
    return (
        f"{100 * d['difference']:+.2f} {unit} ({100 * d['level']:.0f} % CI {lo:+.2f} to "
        f"{hi:+.2f}; McNemar p {d['mcnemar_p']:.3g}; {counts})"
    )


def read_predictions(path: Path) -> dict[str, dict[str, str]]:
    """file -> row of a predictions CSV (evaluate-faces --predictions); ValueError naming the
    file and line of anything that cannot be read as one."""
    by_file: dict[str, dict[str, str]] = {}
    for line, row in read_labels(path, ("predicted",)):  # LabelsError is a ValueError
        if row.get("expression") not in EXPRESSIONS or row.get("predicted") is None:
            raise ValueError(f"{path}, line {line}: not a prediction row "
                             f"(expression {row.get('expression')!r})")  # fmt: skip
        if row["file"] in by_file:
            raise ValueError(f"{path}, line {line}: {row['file']} appears twice")
        by_file[row["file"]] = row
    return by_file


def compare_predictions(
    a: dict[str, dict[str, str]], b: dict[str, dict[str, str]], by: Sequence[str] = ()
) -> dict[str, Any]:
    """Paired differences (B - A) overall and per value of each `by` column; ValueError when
    the two do not hold the same photos with the same labels and groups."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the two files cover different photos ({len(only)}, e.g. {only[0]})")
    files = sorted(a)
    for column in ("expression", *by):
        for f in files:
            if column not in a[f] or column not in b[f]:
                raise ValueError(f"no column {column!r} in both files")
            if a[f][column] != b[f][column]:
                raise ValueError(f"{f}: {column} {a[f][column]!r} in one file, "
                                 f"{b[f][column]!r} in the other")  # fmt: skip
    right_a = np.array([a[f]["predicted"] == a[f]["expression"] for f in files])
    right_b = np.array([b[f]["predicted"] == b[f]["expression"] for f in files])
    out: dict[str, Any] = {"overall": paired_difference(right_a, right_b), "by": {}}
    for column in by:
        values = np.array([a[f][column] or "" for f in files])
        out["by"][column] = {
            v: paired_difference(right_a[values == v], right_b[values == v])
            for v in sorted(set(values))
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("a", type=Path, metavar="A.csv", help="evaluate-faces --predictions")
    p.add_argument("b", type=Path, metavar="B.csv", help="the same photos, another model")
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="also compare per value of this column (e.g. expression, gender)",
    )
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
