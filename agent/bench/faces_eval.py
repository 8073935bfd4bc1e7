"""emotion-agent evaluate-faces: the live face path on labelled photos, overall and per group.

    emotion-agent evaluate-faces LABELS.csv [--by COLUMN]... [-c CONFIG] [--json]
                                 [--predictions FILE.csv]

LABELS.csv has a header with at least ``file`` (a path relative to the CSV) and
``expression`` (a FER2013 class: angry, disgust, fear, happy, sad, surprise, neutral); any
other column can be named with ``--by`` to get the same metrics per value. Each photo goes
through the live camera path's own `FacePipeline` (agent.vision.stage: BlazeFace
detection, eye alignment, quality, the int8 expression classifier), with the models,
runtime and smallest face of the configuration (default: the shipped ones). The photo's
prediction is the classifier's most probable class for its best face (highest quality);
a photo with no face is predicted ``null``.

BLOCK (overall and per group): ``n`` photos, ``detected``, ``detection_rate``,
``accuracy`` (a photo without a face counts as wrong), ``macro_f1`` (over the classes that
occur as labels or predictions anywhere in the file, the same set for every group, so
groups compare), ``per_class_recall`` for each labelled class, ``confusion_by_label``
(true class -> predicted class or "null" -> count). With ``--json`` one object
``{"n", "overall", "by": {COLUMN: {VALUE: BLOCK}}}``.
``--predictions FILE.csv`` also writes each photo's prediction and probabilities (see
`write_predictions`), for a photo-by-photo comparison of two models
(``python -m agent.bench.paired A.csv B.csv --by expression``).
A row that cannot be used (missing file, unknown class, unreadable image) is named on
stderr with its line and left out of every figure; the count of such rows ends stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agent.events import EXPRESSIONS


class LabelsError(ValueError):
    """The labels file as a whole cannot be used."""


def read_labels(path: Path, by: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of every data row; LabelsError when a needed column is missing."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("file", "expression", *by) if c not in columns]
            if missing:
                has = ", ".join(columns)
                raise LabelsError(f"{path}: no column {', '.join(missing)} (has {has})")
            return [(line, row) for line, row in enumerate(reader, 2)]
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{path}: unreadable ({exc})") from None


def block(
    truth: Sequence[str], predicted: Sequence[str | None], classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """The metrics of one set of photos; see the module docstring. `classes`: those macro-F1
    averages over (default: the labels and predictions of this set); pass the whole file's
    so that groups are compared over the same classes."""
    n = len(truth)
    detected = sum(p is not None for p in predicted)
    right = sum(t == p for t, p in zip(truth, predicted, strict=True))
    if classes is None:
        classes = _classes(truth, predicted)
    f1s = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    confusion: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, predicted, strict=True):
        row = confusion.setdefault(t, {})
        key = "null" if p is None else p
        row[key] = row.get(key, 0) + 1
    labelled = Counter(truth)
    return {
        "n": n,
        "detected": detected,
        "detection_rate": _r(detected / n) if n else None,
        "accuracy": _r(right / n) if n else None,
        "macro_f1": _r(float(np.mean(f1s))) if f1s else None,
        "per_class_recall": {
            c: _r(confusion[c].get(c, 0) / labelled[c]) for c in EXPRESSIONS if c in labelled
        },
        "confusion_by_label": {c: confusion[c] for c in EXPRESSIONS if c in confusion},
    }


def _classes(truth: Sequence[str], predicted: Sequence[str | None]) -> list[str]:
    """The classes that occur as labels or predictions, in FER2013 order."""
    return sorted({*truth, *(p for p in predicted if p is not None)}, key=EXPRESSIONS.index)


def _r(x: float) -> float:
    return round(float(x), 4)


class PhotoResult(NamedTuple):
    """One usable row read: its CSV line, the row (expression normalised), the predicted
    class of its best face (None without a face) and that face's probabilities."""

    line: int
    row: dict[str, str]
    predicted: str | None
    probabilities: np.ndarray | None


def expression_label(row: dict[str, str]) -> str | None:
    """A labels row's expression as a FER2013 class name (trimmed, lower case), or None."""
    label = (row.get("expression") or "").strip().lower()
    return label if label in EXPRESSIONS else None


def predict_photos(
    rows: list[tuple[int, dict[str, str]]], root: Path, pipeline: Any, log: Any
) -> list[PhotoResult]:
    """A PhotoResult for each usable row; unusable rows are logged."""
    from agent.sources.session import SessionError, read_image

    out: list[PhotoResult] = []
    for line, row in rows:
        label = expression_label(row)
        if label is None:
            log(f"line {line}: unknown expression {row.get('expression')!r} "
                f"(one of {', '.join(EXPRESSIONS)}): row left out")  # fmt: skip
            continue
        path = root / (row.get("file") or "")
        if not row.get("file") or not path.is_file():
            log(f"line {line}: no such file {path}: row left out")
            continue
        try:
            image = read_image(path)
        except SessionError as exc:
            log(f"line {line}: {exc}: row left out")
            continue
        probs, quality = pipeline.analyse(image)
        best, dist = None, None
        if len(quality):
            dist = np.asarray(probs[int(np.argmax(quality))], dtype=np.float64)
            best = EXPRESSIONS[int(dist.argmax())]
        out.append(PhotoResult(line, {**row, "expression": label}, best, dist))
    return out


PREDICTION_COLUMNS = ("line", "predicted", *(f"p_{c}" for c in EXPRESSIONS))
"""The columns write_predictions adds after the labels file's own."""


def write_predictions(results: Sequence[PhotoResult], path: Path) -> None:
    """One CSV row per usable photo: the labels file's own columns, its `line` there, the
    `predicted` class (empty without a face) and the best face's probability of each class
    (`p_angry` ... `p_neutral`), so that two models can be compared photo by photo
    (`python -m agent.bench.paired A.csv B.csv`) and a miss seen for how sure it was."""
    columns = [c for c in (results[0].row if results else {}) if c is not None]  # one file's
    header = [*columns, *PREDICTION_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(header)
        for r in results:
            probs = [""] * len(EXPRESSIONS)
            if r.probabilities is not None:
                probs = [f"{p:.4f}" for p in r.probabilities]
            cells = [r.row.get(c) or "" for c in columns]
            out.writerow([*cells, r.line, r.predicted or "", *probs])


def check_predictions_path(
    path: Path, labels: Path, rows: list[tuple[int, dict[str, str]]]
) -> None:
    """LabelsError before any photo is read if the predictions would overwrite the labels or
    a labels column has the name of one the predictions add (an old predictions file fed
    back as labels, say)."""
    if path.resolve() == labels.resolve():
        raise LabelsError(f"--predictions {path} is the labels file itself")
    columns = {c for _, row in rows[:1] for c in row if c is not None}
    clash = [c for c in PREDICTION_COLUMNS if c in columns]
    if clash:
        raise LabelsError(f"{labels}: column {', '.join(clash)} would clash with the "
                          f"predictions' own; rename it")  # fmt: skip


def evaluate(results: Sequence[PhotoResult], by: Sequence[str]) -> dict[str, Any]:
    truth = [r.row["expression"] for r in results]
    predicted = [r.predicted for r in results]
    # one class set for every block: a group's macro-F1 must not depend on which classes
    # happen to occur in it
    classes = _classes(truth, predicted)
    groups: dict[str, dict[str, Any]] = {}
    for column in by:
        values = sorted({r.row.get(column) or "" for r in results})
        groups[column] = {
            v: block(
                [r.row["expression"] for r in results if (r.row.get(column) or "") == v],
                [r.predicted for r in results if (r.row.get(column) or "") == v],
                classes,
            )
            for v in values
        }
    return {"n": len(results), "overall": block(truth, predicted, classes), "by": groups}


def format_report(report: dict[str, Any]) -> str:
    def line(name: str, b: dict[str, Any]) -> str:
        recall = ", ".join(f"{c} {v:.2f}" for c, v in b["per_class_recall"].items())
        return (
            f"{name:<28}{b['n']:>5}{b['detection_rate']:>9.2f}{b['accuracy']:>9.2f}"
            f"{b['macro_f1']:>9.2f}  {recall}"
        )

    lines = [f"{'':<28}{'n':>5}{'detected':>9}{'accuracy':>9}{'macro-F1':>9}  recall per class"]
    lines.append(line("overall", report["overall"]))
    for column, values in report["by"].items():
        for value, b in values.items():
            lines.append(line(f"{column}={value}", b))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="emotion-agent evaluate-faces",
        description="Run labelled photos through the live face path; metrics per group.",
        epilog=(__doc__ or "").split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("labels", type=Path, metavar="LABELS.csv")
    p.add_argument("--by", action="append", default=[], metavar="COLUMN")
    p.add_argument("-c", "--config", type=Path, help="models, runtime (default: built-in)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--predictions",
        type=Path,
        metavar="FILE.csv",
        help="also write each photo's prediction and probabilities here",
    )
    args = p.parse_args(argv)

    def log(message: str) -> None:
        print(f"evaluate-faces: {message}", file=sys.stderr)

    try:
        rows = read_labels(args.labels, args.by)
        if args.predictions is not None:
            check_predictions_path(args.predictions, args.labels, rows)
    except LabelsError as exc:
        log(str(exc))
        return 2
    from agent.config import AgentConfig
    from agent.vision.interpreter import ModelError
    from agent.vision.stage import FacePipeline, expression_model_path, face_detector_path

    if args.config is not None:
        from agent.config_loader import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            log(str(exc))
            return 2
    else:
        cfg = AgentConfig()
    m = cfg.models
    try:
        pipeline = FacePipeline(face_detector_path(m), expression_model_path(m), m.runtime,
                                m.num_threads, m.min_face_px, m.flip_average)  # fmt: skip
    except ModelError as exc:
        log(str(exc))
        return 1
    results = predict_photos(rows, args.labels.parent, pipeline, log)
    skipped = len(rows) - len(results)
    if skipped:
        log(f"{skipped} of {len(rows)} rows left out")
    if not results:
        log("no usable row: nothing to evaluate")
        return 1
    report = evaluate(results, args.by)
    print(json.dumps(report, indent=1) if args.json else format_report(report), flush=True)
    if args.predictions is not None:
        try:
            write_predictions(results, args.predictions)
        except OSError as exc:
            log(f"{args.predictions}: cannot write predictions ({exc}); the report above stands")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
