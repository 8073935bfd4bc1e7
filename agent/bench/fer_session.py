"""A replayable session of labelled faces: FER2013 PublicTest photos shown one class at a time.

    python -m agent.bench.fer_session ../shared/data/fer2013/fer2013_train_public.npz OUT \
        [--per-class 40] [--fps 2] [--seconds-per-face 1.5] [--lead-in 0] [--seed 0] [--json]

It answers "does the whole agent order happy > neutral > sad, angry in valence?" with real
faces: the session (format v1, see `agent.sources.session`) drives the camera replay, the
face stage, the windows and MQTT exactly as a recording would (tests/test_fer_valence.py).

Layout: for each class in turn, `per_class` PublicTest faces of that label (a fixed random
draw per class: `seed` and the label pick it, so adding a class never changes another's
faces), each shown for `seconds_per_face` at `fps`. A class segment lasts a whole number
of state windows (`window_s`, the agent's default 10 s), so every window holds one class.
An optional lead-in (`lead_in_s`) first shows other, unscored neutral faces: a calm start
during which an agent that forms a personal baseline may report `calibrating`.

Frames: a FER2013 face is a tight 48x48 crop, too small and too tightly framed for
BlazeFace short range (128x128 input). Each face is upscaled bilinearly (OpenCV-style, as
the expression model's own preprocessing) to `face_px` and centred on a mid-grey canvas
of `frame_size`, like a person filling a good part of a 4:3 camera frame. Measured on all
2621 PublicTest faces of happy, neutral, sad and angry with the shipped short-range
detector, the share of frames with a face found:

    face 160 px on 320x240 grey  99.6 %   (the default)
    face 200 px on 320x240 grey  99.5 %   face 160/200 on 256x256 grey  99.5 / 99.2 %
    face 200 px on 320x240, canvas = the face's mean grey  99.4 %
    edge-replicated or mirrored borders: 94-99 %, and a mirrored border gives extra,
    partial mirror faces (up to 134 multi-face frames out of 160 with a 120 px face).

Expression accuracy through detector + alignment stays at the crops' own level (happy
0.85, neutral 0.53, sad 0.58, angry 0.51 top-1 with the int8 model, 160 px layout).

Data: FER2013 has no stated license (web-scraped faces, used for research by
convention). The session therefore must stay out of the repository: build it into a
temporary folder. The manifest says `synthetic: true`: the faces are real photographs,
but the session is assembled by this script, not recorded by a camera (timing, canvas
and scale are made up), and the format's `synthetic` means "generated rather than
recorded"; the description says what is real.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agent.events import EXPRESSIONS
from agent.vision.expressions import resize_faces

DEFAULT_CLASSES: tuple[str, ...] = ("happy", "neutral", "sad", "angry")
FACE_PX = 160
FRAME_SIZE = (320, 240)  # (width, height)
BACKGROUND = 128
START = "2026-01-01T00:00:00Z"
IMAGE_LICENSE = "FER2013 PublicTest; no license stated (research use by convention)"
LICENSE = (
    "none stated: FER2013 faces are web-scraped images without a stated license, used for "
    "research by convention; do not redistribute or commit this session"
)


def face_frame(
    face: np.ndarray,
    face_px: int = FACE_PX,
    frame_size: tuple[int, int] = FRAME_SIZE,
    background: int = BACKGROUND,
) -> np.ndarray:
    """A (H, W) uint8 camera-like frame: the 48x48 face upscaled to `face_px`, centred."""
    width, height = frame_size
    if not 0 < face_px <= min(width, height):
        raise ValueError(f"face_px must be 1..{min(width, height)}, got {face_px}")
    big = resize_faces(np.asarray(face, np.uint8)[None], (face_px, face_px))[0]
    frame = np.full((height, width), background, np.uint8)
    x0, y0 = (width - face_px) // 2, (height - face_px) // 2
    frame[y0 : y0 + face_px, x0 : x0 + face_px] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return frame


def write_pgm(path: Path, image: np.ndarray) -> None:
    """A binary PGM (P5) of a (H, W) uint8 image."""
    h, w = image.shape
    path.write_bytes(b"P5\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(image).tobytes())


def _whole(value: float, what: str) -> int:
    n = round(value)
    if n < 1 or not math.isclose(value, n, rel_tol=0, abs_tol=1e-6):
        raise ValueError(f"{what} must be a whole number >= 1, got {value:g}")
    return n


def build_fer_session(
    npz_path: str | Path,
    out_dir: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    per_class: int = 40,
    fps: float = 2.0,
    seconds_per_face: float = 1.5,
    seed: int = 0,
    *,
    lead_in_s: float = 0.0,
    lead_in_class: str = "neutral",
    window_s: float = 10.0,
    face_px: int = FACE_PX,
    frame_size: tuple[int, int] = FRAME_SIZE,
    x_key: str = "x_public",
    y_key: str = "y_public",
) -> dict[str, Any]:
    """Write a session folder at `out_dir` (created; must not exist or be empty).

    `lead_in_s` (a whole number of windows) first shows other faces of `lead_in_class`,
    drawn apart from the scored ones: a calm start in which an agent may form its baseline
    (its windows belong to no scored segment).

    Returns what was built: path, duration_s, window_s, frames, images, the layout,
    `lead_in` (None, or a segment like those below) and `segments`: the scored classes in
    play order, {class, label, start_s, end_s, windows, faces, indices} (indices into the
    npz arrays). The manifest carries the same as `x-fer2013`.
    """
    classes = tuple(classes)
    unknown = [c for c in (*classes, lead_in_class) if c not in EXPRESSIONS]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names from {EXPRESSIONS}, got {classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    frames_per_face = _whole(fps * seconds_per_face, "fps * seconds_per_face (frames per face)")
    segment_s = per_class * seconds_per_face
    windows = _whole(segment_s / window_s, "per_class * seconds_per_face / window_s (windows)")
    lead_faces = 0
    if lead_in_s:
        _whole(lead_in_s / window_s, "lead_in_s / window_s (lead-in windows)")
        lead_faces = _whole(lead_in_s / seconds_per_face, "lead_in_s / seconds_per_face")

    npz_path = Path(npz_path)
    with np.load(npz_path) as data:
        missing = [k for k in (x_key, y_key) if k not in data.files]
        if missing:
            raise KeyError(f"{npz_path} has no array {missing[0]!r}; it has {sorted(data.files)}")
        x, y = data[x_key], data[y_key].astype(np.int64)
    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"{npz_path}: expected {x_key} (N, H, W) and {len(x)} labels")

    draws: dict[str, np.ndarray] = {}
    for name in dict.fromkeys((*classes, lead_in_class) if lead_faces else classes):
        label = EXPRESSIONS.index(name)
        pool = np.flatnonzero(y == label)
        wanted = per_class * (name in classes) + lead_faces * (name == lead_in_class)
        if len(pool) < wanted:
            raise ValueError(f"{npz_path}: only {len(pool)} {name} faces, {wanted} needed")
        if name in classes:
            draws[name] = np.random.default_rng([seed, label]).choice(pool, per_class, False)
        if name == lead_in_class and lead_faces:
            rest = np.setdiff1d(pool, draws.get(name, np.zeros(0, np.int64)))
            draws["lead-in"] = np.random.default_rng([seed, label, 1]).choice(
                rest, lead_faces, False
            )

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    (out / "images").mkdir(parents=True, exist_ok=True)

    rows = ["t,file,license"]
    t0 = 0.0

    def play(name: str, picked: np.ndarray) -> dict[str, Any]:
        nonlocal t0
        for k, index in enumerate(picked):
            rel = f"images/{name}_{int(index):05d}.pgm"
            write_pgm(out / rel, face_frame(x[index], face_px, frame_size))
            for j in range(frames_per_face):
                t = t0 + k * seconds_per_face + j / fps
                rows.append(f"{t:.3f},{rel},{IMAGE_LICENSE}")
        length = len(picked) * seconds_per_face
        segment = {
            "class": name,
            "label": EXPRESSIONS.index(name),
            "start_s": round(t0, 6),
            "end_s": round(t0 + length, 6),
            "windows": round(length / window_s),
            "faces": len(picked),
            "indices": [int(i) for i in picked],
        }
        t0 += length
        return segment

    lead_in = play(lead_in_class, draws["lead-in"]) if lead_faces else None
    segments = [play(name, draws[name]) for name in classes]
    duration = round(t0, 6)
    (out / "frames.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    layout = {
        "face_px": face_px,
        "frame_size": list(frame_size),
        "background": BACKGROUND,
        "fps": fps,
        "seconds_per_face": seconds_per_face,
        "frames_per_face": frames_per_face,
        "window_s": window_s,
    }
    manifest = {
        "format": "emotion-agent-session",
        "version": 1,
        "start": START,
        "duration_s": duration,
        "synthetic": True,
        "description": (
            f"FER2013 PublicTest faces ({x_key}/{y_key} of {npz_path.name}), "
            f"{per_class} per class, one class at a time: {', '.join(classes)}. Real "
            "photographs, but the session is assembled by agent.bench.fer_session rather "
            "than recorded: each 48x48 face is upscaled bilinearly to "
            f"{face_px} px and centred on a {frame_size[0]}x{frame_size[1]} mid-grey "
            f"canvas, shown for {seconds_per_face:g} s at {fps:g} fps; each class segment "
            f"spans {windows} state windows of {window_s:g} s"
            + (
                f", after a {lead_in_s:g} s lead-in of other {lead_in_class} faces."
                if lead_in
                else "."
            )
        ),
        "license": LICENSE,
        "modalities": {"camera": {"frames": "frames.csv"}},
        "x-fer2013": {
            "split": "PublicTest",
            "seed": seed,
            "layout": layout,
            "lead_in": lead_in,
            "segments": segments,
        },
    }
    (out / "manifest.yaml").write_text(
        yaml.safe_dump(manifest, sort_keys=False, width=100), encoding="utf-8"
    )
    return {
        "path": str(out),
        "duration_s": duration,
        "window_s": window_s,
        "frames": len(rows) - 1,
        "images": per_class * len(classes) + lead_faces,
        "layout": layout,
        "lead_in": lead_in,
        "segments": segments,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m agent.bench.fer_session",
        description="Build a replayable session of FER2013 PublicTest faces, one class at a time.",
    )
    p.add_argument("npz", type=Path, help="fer2013_train_public.npz (x_public, y_public)")
    p.add_argument("out", type=Path, help="session folder to create (must not exist)")
    p.add_argument("--per-class", type=int, default=40, help="faces per class (40)")
    p.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second (2)")
    p.add_argument("--seconds-per-face", type=float, default=1.5, help="(1.5)")
    p.add_argument("--window", type=float, default=10.0, help="state window, s (10)")
    p.add_argument(
        "--lead-in", type=float, default=0.0, metavar="S", help="unscored neutral faces first (0)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.out.exists():
        p.error(f"{args.out} exists: give a new folder")
    try:
        built = build_fer_session(
            args.npz,
            args.out,
            tuple(c.strip() for c in args.classes.split(",") if c.strip()),
            args.per_class,
            args.fps,
            args.seconds_per_face,
            args.seed,
            lead_in_s=args.lead_in,
            window_s=args.window,
        )
    except (OSError, KeyError, ValueError) as exc:
        shutil.rmtree(args.out, ignore_errors=True)
        print(f"fer_session: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(built, indent=2))
        return 0
    lay = built["layout"]
    print(
        f"{built['path']}: {built['duration_s']:g} s, {built['frames']} frames of "
        f"{built['images']} faces ({lay['face_px']} px on {lay['frame_size'][0]}x"
        f"{lay['frame_size'][1]} grey, {lay['fps']:g} fps, {lay['frames_per_face']} frames "
        f"per face), windows of {built['window_s']:g} s"
    )
    lead = [{**built["lead_in"], "class": "(lead-in)"}] if built["lead_in"] else []
    for s in lead + built["segments"]:
        print(
            f"  {s['class']:<8} {s['start_s']:7.1f} - {s['end_s']:7.1f} s  "
            f"{s['windows']} windows, {s['faces']} faces"
        )
    print("license: FER2013 states none (research use by convention): keep it out of the repo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
