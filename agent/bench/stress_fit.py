"""Fit the physiological stress model, choosing it by leave-one-subject-out cross-validation.

    python -m agent.bench.stress_fit DIR --negative PHASE --positive PHASE... [--out FILE]

Every subject of DIR (the evaluate-stress layout) is replayed once through the live path
(agent.bench.stress_eval.simulate_states); each scored window gives the signed z-scores
against the personal baseline that fusion saw, with its label. Candidates (feature sets,
L2 strength) are compared by leave-one-subject-out: fit on 16 people, score the 17th, and
report the median of the held-out per-subject AUROCs and the pooled balanced accuracy at
0.5. Nothing is chosen on a single subject. The chosen candidate is then refitted on
everyone and, with --out, written as the model file fusion loads
(agent/affect/stress_model.json), with how it was fitted and its held-out figures: one
model for windows with a skin-conductance level, one for a heart-rate strap alone.

Each model is a logistic regression, stress = logistic(b + sum_k w_k x_k) on baseline-
normalised signals x (z-scores, or `scl_us_log`, the log ratio of the skin-conductance
level to its baseline), fitted and scored on the windows that have all its signals (fusion
uses the first model whose signals a window has), by Newton's method with an L2 penalty on
the weights (not the intercept) and the two classes weighted equally, so 0.5 is a natural
threshold. A candidate whose weights go against a signal's known direction (all are signed
so that positive is activation) is rejected. Among candidates within TOLERANCE of the best
median AUROC + balanced accuracy, the one with the fewest signals wins. The review-based
weights fusion used before the fit are scored beside them, same run, same windows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench.stress_eval import Scored, across_subjects, score_subject
from agent.config import AgentConfig
from agent.sessions.stress_predict import SubjectError, read_recording

FEATURES = ("hr_bpm", "rmssd_ms", "scl_us", "scr_per_min")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """[intercept, weights...] maximising the penalised likelihood (Newton / IRLS), the two
    classes weighted equally (so 0.5 is the natural threshold whatever the class balance)."""
    X = np.column_stack([np.ones(len(x)), x])
    sw = np.where(y == 1, 0.5 / max(1, int(y.sum())), 0.5 / max(1, int((1 - y).sum()))) * len(y)
    beta = np.zeros(X.shape[1])
    penalty = np.full(X.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        grad = X.T @ (sw * (y - p)) - penalty * beta
        hess = (X * (sw * p * (1 - p))[:, None]).T @ X + np.diag(penalty) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def design(windows: Sequence[Scored], features: Sequence[str]) -> np.ndarray:
    return np.array([[w.z.get(k, 0.0) for k in features] for w in windows]).reshape(
        len(windows), len(features)
    )


def predict(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(beta[0] + x @ beta[1:])))


def _held_out(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a candidate is judged by (`subjects` is counted by the caller)."""
    return {k: v for k, v in summary.items() if k not in ("subjects", "pooled_auroc")}


def _by_label(
    scores: Sequence[float], windows: Sequence[Scored]
) -> tuple[list[float], list[float]]:
    pairs = list(zip(scores, windows, strict=True))
    return [float(p) for p, w in pairs if w.label == 0], [
        float(p) for p, w in pairs if w.label == 1
    ]


def loso(subjects: dict[str, list[Scored]], features: Sequence[str], l2: float) -> dict[str, Any]:
    """Held-out per-subject AUROC (median, IQR) and pooled rates at 0.5, each subject
    scored by the model fitted on all the others."""

    def held_out(held: str) -> tuple[list[float], list[float]]:
        train = [w for s, ws in subjects.items() if s != held for w in ws]
        beta = fit_logistic(design(train, features), np.array([w.label for w in train]), l2)
        return _by_label(predict(beta, design(subjects[held], features)), subjects[held])

    summary = across_subjects(held_out(held) for held in subjects)
    return {"features": list(features), "l2": l2, **_held_out(summary)}


def collect(
    root: Path, cfg: AgentConfig, negative: Sequence[str], positive: Sequence[str]
) -> dict[str, list[Scored]]:
    """Scored windows (labels 0/1, any state) of every usable subject."""
    out: dict[str, list[Scored]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "_."):
        try:
            _, scored = score_subject(read_recording(folder), cfg, negative, positive)
        except SubjectError as exc:
            print(f"# {folder.name} skipped: {exc}", file=sys.stderr)
            continue
        out[folder.name] = [w for w in scored if w.label >= 0 and w.z]
    return out


# Candidates per model. The skin model is used whenever EDA gives a level; the heart model
# only without one (a heart-rate strap alone), so each is fitted and scored on the windows
# that have its signals.
CANDIDATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "skin": (
        ("scl_us",),
        ("scl_us_log",),
        ("scl_us_log", "scr_per_min"),
        ("hr_bpm", "scl_us_log"),
        ("hr_bpm", "scl_us_log", "scr_per_min"),
        ("hr_bpm", "rmssd_ms", "scl_us_log"),
        (*FEATURES, "scl_us_log"),
    ),
    "heart": (("hr_bpm",), ("rmssd_ms",), ("hr_bpm", "rmssd_ms")),
}
L2S = (1.0, 10.0, 100.0)
# Within this much of the best (median AUROC + balanced accuracy), the fewest signals win:
# the differences between close candidates are noise on 17 people.
TOLERANCE = 0.01
# Literature weights and mapping (agent.affect.fusion until the fit), scored beside it.
LITERATURE = {"hr_bpm": 0.30, "rmssd_ms": 0.40, "scl_us": 0.10, "scr_per_min": 0.20}


def literature(subjects: dict[str, list[Scored]]) -> dict[str, Any]:
    """The pre-fit stress (logistic(1.5 zbar - 1), zbar the weighted mean of present z)."""

    def score(w: Scored) -> float:
        present = {k: v for k, v in w.z.items() if k in LITERATURE}
        total = sum(LITERATURE[k] for k in present)
        zbar = sum(LITERATURE[k] * v for k, v in present.items()) / total if total else 0.0
        return 1.0 / (1.0 + math.exp(-(1.5 * zbar - 1.0)))

    summary = across_subjects(_by_label([score(w) for w in ws], ws) for ws in subjects.values())
    return {"features": "literature weights", **_held_out(summary)}


def choose(results: list[dict[str, Any]]) -> dict[str, Any]:
    def merit(r: dict[str, Any]) -> float:
        return r["median_auroc"] + (r["balanced_accuracy"] or 0.0)

    best = max(merit(r) for r in results)
    close = [r for r in results if merit(r) >= best - TOLERANCE]
    return min(close, key=lambda r: (len(r["features"]), -merit(r)))


def fit_model(
    name: str, subjects: dict[str, list[Scored]], log: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model as stored, its held-out figures) for one candidate family."""
    needs = {"skin": ("scl_us",), "heart": ("hr_bpm",)}[name]
    usable = {s: [w for w in ws if all(k in w.z for k in needs)] for s, ws in subjects.items()}
    usable = {s: ws for s, ws in usable.items() if {w.label for w in ws} == {0, 1}}
    results = []
    for features in CANDIDATES[name]:
        rows = {s: [w for w in ws if all(k in w.z for k in features)] for s, ws in usable.items()}
        rows = {s: ws for s, ws in rows.items() if {w.label for w in ws} == {0, 1}}
        for l2 in L2S:
            pooled = [w for ws in rows.values() for w in ws]
            beta = fit_logistic(design(pooled, features), np.array([w.label for w in pooled]), l2)
            if np.any(beta[1:] < 0):
                # every signal is signed so that positive is activation (Kreibig 2010); a
                # negative weight fits this data's artifacts (wrist-PPG RMSSD), not physiology
                why = "a weight against its signal's direction"
                log(json.dumps({"model": name, "features": list(features), "rejected": why}))
                continue
            r = loso(rows, features, l2)
            r["subjects"] = len(rows)
            results.append(r)
            log(json.dumps({"model": name, **r}))
    best = choose(results)
    features = best["features"]
    everyone = [w for ws in usable.values() for w in ws if all(k in w.z for k in features)]
    beta = fit_logistic(
        design(everyone, features), np.array([w.label for w in everyone]), best["l2"]
    )
    model = {
        "name": name,
        "intercept": round(float(beta[0]), 6),
        "weights": {k: round(float(w), 6) for k, w in zip(features, beta[1:], strict=True)},
        # how far the held-out ranking is from chance, used as this model's confidence
        "confidence": round(max(0.0, 2.0 * best["median_auroc"] - 1.0), 3),
        "windows": len(everyone),
    }
    return model, best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench.stress_fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", type=Path)
    p.add_argument("--negative", action="append", required=True)
    p.add_argument("--positive", action="append", required=True)
    p.add_argument("--out", type=Path, help="write the chosen models here")
    p.add_argument("-c", "--config", type=Path, help="agent configuration (default: built-in)")
    args = p.parse_args(argv)
    if args.config is not None:
        from agent.config_loader import load_config

        cfg = load_config(args.config)
    else:
        cfg = AgentConfig()

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    subjects = collect(args.dir, cfg, args.negative, args.positive)
    before = literature(subjects)
    models, held_out = [], {}
    for name in ("skin", "heart"):
        model, best = fit_model(name, subjects, log)
        models.append(model)
        held_out[name] = best
    command = (
        "python -m agent.bench.stress_fit DIR "
        + " ".join(f"--negative {n}" for n in args.negative)
        + " "
        + " ".join(f"--positive {n}" for n in args.positive)
    )
    out = {
        "format": "emotion-agent-stress-model",
        "version": 1,
        "models": models,
        "fitted": {
            "data": f"{len(subjects)} subjects of {args.dir.name}",
            "negative": args.negative,
            "positive": args.positive,
            "calibration_s": cfg.baseline.calibration_s,
            "method": "class-balanced L2 logistic regression on baseline-normalised signals; "
            "features and L2 chosen by leave-one-subject-out (median per-subject AUROC + "
            f"pooled balanced accuracy, fewest signals within {TOLERANCE})",
            "command": command,
        },
        "leave_one_subject_out": held_out,
        "literature_weights_same_windows": before,
    }
    text = json.dumps(out, indent=1) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
