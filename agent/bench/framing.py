"""Do the agent's live face crops look like the crops the expression models learned from?

    python -m agent.bench.framing --npz ../shared/data/fer2013/fer2013_train_public.npz \\
        [--split train|public] [--n N] [--framing MARGIN,RAISE]... [--json]

The expression models learned from FER2013's 48x48 crops; the agent feeds them crops cut
around BlazeFace's box (agent/vision/align.py). This puts FER2013 faces through that live
path and compares the two framings on the same faces:

- each crop is padded by a quarter of its side (edge pixels) and scaled up 4x, so that
  BlazeFace finds it as it finds a face in a camera frame;
- geometry: where the eyes sit (their midpoint, as a share of the crop's side from the left
  and the top) and how far apart, in the native crop and in the live crop; from the box-
  relative positions it fits the margin and raise (`crop_frame`) that put the live crop's
  eyes where the native crops have them, on average;
- accuracy: the default expression model (or --model) on the native crops and on the live
  crops of each framing given (default: the agent's own, CROP_MARGIN and CROP_RAISE), with
  FER+ crowd figures (agent/bench/ferplus.py) where the votes are stored beside the crops.

Fit on `--split train`, judge on `--split public`: PublicTest is the selection split and
is never fitted on. What it found (the fitted framing did not help) is recorded at
CROP_RAISE. Offline evaluation only: nothing on the device imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench.ferplus import crowd_metrics
from agent.vision.align import (
    CROP_MARGIN,
    CROP_RAISE,
    align_face,
    crop_frame,
    eye_geometry,
    sample_affine,
)
from agent.vision.expressions import (
    DEFAULT_EXPRESSION_MODEL,
    ExpressionClassifier,
    classification_metrics,
)
from agent.vision.faces import Face, FaceDetector, load_detector
from agent.vision.interpreter import load_model, models_dir

UPSCALE = 4
PAD = 0.25  # of the native crop's side, on each edge


def as_camera_frame(crop: np.ndarray, up: int = UPSCALE, pad: float = PAD) -> np.ndarray:
    """A native (S, S) crop padded with its edge pixels by `pad` of S per side and scaled up
    `up` times (bilinear): a frame in which the face is large and has room around it."""
    side = crop.shape[0]
    p = round(pad * side)
    padded = np.pad(np.asarray(crop, np.float32), p, mode="edge")
    n = padded.shape[0] * up
    centre = np.array([padded.shape[1] / 2, padded.shape[0] / 2])
    return sample_affine(padded, centre, np.eye(2), (n, n), 1.0 / up)


def to_native(xy: np.ndarray, side: int, up: int = UPSCALE, pad: float = PAD) -> np.ndarray:
    """Frame pixels of `as_camera_frame` -> shares of the native crop's side."""
    return (np.asarray(xy, np.float64) / up - round(pad * side)) / side


def eyes_in_crop(face: Face, margin: float, raise_: float) -> tuple[np.ndarray, float]:
    """The eye midpoint (x, y as shares of the side, from the crop's top left) and the eye
    distance (share of the side) in the live crop `crop_frame` gives."""
    mid, _, dist, _ = eye_geometry(face)
    centre, axes, side = crop_frame(face, margin, raise_)
    return axes @ (mid - centre) / side + 0.5, dist / side


def fit_framing(
    native_eyes: np.ndarray, native_dist: np.ndarray, faces: Sequence[Face]
) -> tuple[float, float]:
    """(margin, raise) that put the live crop's eyes, on average, where the native crops
    have them: the eye distance's share of the side and the eyes' height."""
    rel_dist, rel_down = [], []
    for face in faces:
        mid, _, dist, _ = eye_geometry(face)
        centre, axes, _ = crop_frame(face, 0.0, 0.0)
        box = max(face.width, face.height)
        rel_dist.append(dist / box)
        rel_down.append(float(axes[1] @ (mid - centre)) / box)
    scale = float(np.mean(rel_dist) / np.mean(native_dist))  # side / box side
    raise_ = float(np.mean(native_eyes[:, 1]) - 0.5 - np.mean(rel_down) / scale)
    return scale - 1.0, raise_


def detect_all(
    crops: np.ndarray, detector: FaceDetector
) -> tuple[list[int], list[Face], list[np.ndarray]]:
    """Indices of the crops where BlazeFace finds a face, the best face and its frame."""
    found, faces, frames = [], [], []
    for i, crop in enumerate(crops):
        frame = as_camera_frame(crop)
        detected = detector.detect(frame)
        if detected:
            found.append(i)
            faces.append(max(detected, key=lambda f: f.score))
            frames.append(frame)
    return found, faces, frames


def _scores(pred: np.ndarray, y: np.ndarray, votes: np.ndarray | None) -> dict[str, Any]:
    m = classification_metrics(y, pred)
    out = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
    if votes is not None:
        out["crowd"] = crowd_metrics(pred, votes)
    return out


def run(
    x: np.ndarray,
    y: np.ndarray,
    votes: np.ndarray | None,
    classifier: ExpressionClassifier,
    detector: FaceDetector,
    framings: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """Geometry, fitted framing and per-framing scores for the crops `x` (labels `y`)."""
    side = x.shape[1]
    found, faces, frames = detect_all(x, detector)
    if not found:
        raise ValueError("BlazeFace found no face in any crop")
    idx = np.array(found)
    eyes = [eye_geometry(f) for f in faces]  # midpoint, axis, distance, angle in frame px
    native_eyes = np.array([to_native(mid, side) for mid, _, _, _ in eyes])
    native_dist = np.array([dist / UPSCALE / side for _, _, dist, _ in eyes])
    margin, raise_ = fit_framing(native_eyes, native_dist, faces)
    geometry: dict[str, Any] = {
        "native": {
            "eyes_xy": native_eyes.mean(0).round(3).tolist(),
            "eye_distance": round(float(native_dist.mean()), 3),
        }
    }
    sub_votes = votes[idx] if votes is not None else None
    size = classifier.size
    scores = {"native": _scores(classifier.predict(list(x[idx])).argmax(1), y[idx], sub_votes)}
    for m, r in framings:
        name = f"live margin {m:g} raise {r:g}"
        in_crop = [eyes_in_crop(f, m, r) for f in faces]
        geometry[name] = {
            "eyes_xy": np.mean([e for e, _ in in_crop], 0).round(3).tolist(),
            "eye_distance": round(float(np.mean([d for _, d in in_crop])), 3),
        }
        crops = [
            align_face(fr, f, size, m, r, gray=fr) for fr, f in zip(frames, faces, strict=True)
        ]
        scores[name] = _scores(classifier.predict(crops).argmax(1), y[idx], sub_votes)
    return {
        "n": len(x),
        "detected": len(found),
        "geometry": geometry,
        "fitted": {"margin": round(margin, 3), "raise": round(raise_, 3)},
        "scores": scores,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"faces: {report['n']}, found by BlazeFace: {report['detected']}",
        f"fitted framing (eyes where the native crops have them): margin "
        f"{report['fitted']['margin']:.3f}, raise {report['fitted']['raise']:.3f}",
        "",
        f"{'crop':32s} {'eyes x':>7s} {'eyes y':>7s} {'eye dist':>8s} {'acc':>7s} {'F1':>6s}"
        f" {'crowd':>7s} {'subtle':>7s} {'neutral':>7s}",
    ]
    for name, s in report["scores"].items():
        g = report["geometry"][name]
        c = s.get("crowd") or {}

        def pct(key: str, crowd: dict[str, Any] = c) -> str:
            v = crowd.get(key)
            return f"{100 * v:6.1f}%" if v is not None else f"{'-':>7s}"

        lines.append(
            f"{name:32s} {g['eyes_xy'][0]:7.3f} {g['eyes_xy'][1]:7.3f} {g['eye_distance']:8.3f}"
            f" {100 * s['accuracy']:6.2f}% {s['macro_f1']:6.3f} {pct('ferplus_majority_accuracy')}"
            f" {pct('subtle_smiles_read_happy')} {pct('neutral_predicted_share')}"
        )
    return "\n".join(lines)


def _framing(text: str) -> tuple[float, float]:
    try:
        margin, raise_ = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MARGIN,RAISE such as 0.2,0; got {text!r}"
        ) from None
    return margin, raise_


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench.framing", description=__doc__)
    p.add_argument("--npz", type=Path, required=True, help="x_<split>, y_<split> [ferplus_<split>]")
    p.add_argument("--split", default="public", help="train (to fit) or public (to judge)")
    p.add_argument("--n", type=int, default=0, help="random faces to use (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=DEFAULT_EXPRESSION_MODEL, help="file in models/")
    p.add_argument("--runtime", default="auto")
    p.add_argument(
        "--framing",
        type=_framing,
        action="append",
        help="MARGIN,RAISE to score (repeatable; default: the agent's own, "
        f"{CROP_MARGIN:g},{CROP_RAISE:g})",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with np.load(args.npz) as d:
        keys = (f"x_{args.split}", f"y_{args.split}")
        if any(k not in d for k in keys):
            print(f"{args.npz}: needs {keys[0]} and {keys[1]}", file=sys.stderr)
            return 2
        x, y = d[keys[0]], d[keys[1]]
        votes = d[f"ferplus_{args.split}"] if f"ferplus_{args.split}" in d else None
    if args.n:
        pick = np.sort(np.random.default_rng(args.seed).permutation(len(y))[: args.n])
        x, y = x[pick], y[pick]
        votes = votes[pick] if votes is not None else None
    model = load_model(models_dir() / args.model, runtime=args.runtime, num_threads=1)
    report = run(
        x,
        y,
        votes,
        ExpressionClassifier(model),
        load_detector(runtime=args.runtime),
        args.framing or [(CROP_MARGIN, CROP_RAISE)],
    )
    report |= {"split": args.split, "model": args.model, "runtime": model.runtime}
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
