"""How FER2013 frames a face, and whether the live aligner frames faces the same way.

    python -m agent.bench.crop_geometry --fer2013 PATH/fer2013_train_public.npz [--json]

The expression models learned from FER2013's crops, so the agent's aligner (agent.vision.
align.crop_frame) should cut a live face out the way FER2013 did. This measures that in
two parts on PublicTest (the selection split), each face upscaled to 192x192 and run
through BlazeFace (short range):

1. geometry, on the first half: the median eye distance, eye-to-mouth drop and eye-line
   height as shares of the crop, the constants the aligner uses;
2. accuracy, on the other half: the default expression model on the original crops, on the
   crops the aligner re-cuts from the upscaled face, and on the previous framing (the
   detector box plus 20 %), so the framing is judged by faces it was not measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

UPSCALE = 192


def detect_upscaled(x: np.ndarray) -> list[tuple[int, Any]]:
    """(index, best face) for each 48x48 crop in which BlazeFace finds a face."""
    from agent.vision.expressions import resize_faces
    from agent.vision.faces import load_detector
    from agent.vision.interpreter import models_dir

    det = load_detector(models_dir() / "face_detection_short_range.tflite")
    up = resize_faces(x, (UPSCALE, UPSCALE)).astype(np.uint8)
    found = []
    for i, im in enumerate(up):
        faces = det.detect(np.repeat(im[..., None], 3, axis=2))
        if faces:
            found.append((i, max(faces, key=lambda f: f.score)))
    return found


def geometry(found: list[tuple[int, Any]]) -> dict[str, Any]:
    """Medians (and quartiles) of the keypoint spans as shares of the crop's side."""
    from agent.vision.align import eye_geometry
    from agent.vision.faces import MOUTH

    rows = []
    for _, face in found:
        mid, ex, dist, _ = eye_geometry(face)
        ey = np.array([-ex[1], ex[0]])
        drop = float((np.asarray(face.keypoints[MOUTH]) - mid) @ ey)
        rows.append((dist / UPSCALE, drop / UPSCALE, mid[1] / UPSCALE, mid[0] / UPSCALE))
    r = np.array(rows)
    names = ("eye_distance", "mouth_drop", "eye_line_y", "eye_mid_x")
    return {
        name: {
            "median": round(float(np.median(r[:, k])), 3),
            "iqr": [round(float(v), 3) for v in np.percentile(r[:, k], [25, 75])],
        }
        for k, name in enumerate(names)
    }


def framing_accuracy(x: np.ndarray, y: np.ndarray, found: list[tuple[int, Any]]) -> dict[str, Any]:
    """Default model's accuracy on original, aligner-cut and box-cut crops of the same faces."""
    from agent.config import ModelsConfig
    from agent.runtime import expression_model_path
    from agent.vision.align import align_face, eye_geometry, sample_affine
    from agent.vision.expressions import ExpressionClassifier, resize_faces
    from agent.vision.interpreter import load_model

    path = expression_model_path(ModelsConfig())
    clf = ExpressionClassifier(load_model(path))
    size = clf.size
    idx = np.array([i for i, _ in found])
    up = resize_faces(x[idx], (UPSCALE, UPSCALE))
    aligned, boxed = [], []
    for im, (_, face) in zip(up, found, strict=True):
        aligned.append(align_face(im, face, size, gray=im))
        _, ex, _, _ = eye_geometry(face)
        side = max(face.width, face.height) * 1.2
        axes = np.array([ex, [-ex[1], ex[0]]])
        crop = sample_affine(im, np.asarray(face.center), axes, size, side / max(size))
        boxed.append(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    truth = y[idx]
    out: dict[str, Any] = {"model": path.name, "n": len(idx)}
    for name, crops in (("original", x[idx]), ("aligner", aligned), ("box_plus_20pct", boxed)):
        pred = clf.predict(np.stack(crops)).argmax(axis=1)
        out[name] = {
            "accuracy": round(float(np.mean(pred == truth)), 4),
            "happy_recall": round(float(np.mean(pred[truth == 3] == 3)), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fer2013", type=Path, required=True, help="fer2013_train_public.npz")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with np.load(args.fer2013) as d:
        x, y = d["x_public"], d["y_public"].astype(np.int64)
    half = len(y) // 2
    found_a = detect_upscaled(x[:half])
    found_b = detect_upscaled(x[half:])
    report = {
        "geometry": {"n": len(found_a), "of": half, **geometry(found_a)},
        "framing": framing_accuracy(x[half:], y[half:], found_b),
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    g = report["geometry"]
    print(f"geometry on PublicTest[:{half}]: faces found {g['n']} of {g['of']}")
    for k in ("eye_distance", "mouth_drop", "eye_line_y", "eye_mid_x"):
        print(
            f"  {k:13s} median {g[k]['median']:.3f}  IQR {g[k]['iqr'][0]:.3f}-{g[k]['iqr'][1]:.3f}"
        )
    f = report["framing"]
    print(f"framing on PublicTest[{half}:], {f['n']} faces found, model {f['model']}:")
    for k in ("original", "aligner", "box_plus_20pct"):
        print(f"  {k:15s} accuracy {f[k]['accuracy']:.4f}  happy recall {f[k]['happy_recall']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
