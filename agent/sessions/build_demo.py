"""Build the bundled demo session (agent/sessions/demo) from two real recordings.

    python -m agent.sessions.build_demo --cremad DIR --stress DIR [--out DIR] [--subject SXX]

    --cremad  CREMA-D actor 1001's frames: a folder with labels.csv and frame_NNNN.jpg
              (../shared/media/cremad_1001/frames_10fps in the project's workspace)
    --stress  the Stress-Predict subjects: a folder of SXX/ folders with ibi.csv,
              hr_e4_1hz.csv, eda_4hz.csv and segments.csv (../shared/data/stress/stress_predict)
    --out     where to write the session (default: agent/sessions/demo beside this file)
    --subject another participant with the same recipe (default S18, the shipped one)

The session is a COMPOSITE of two real recordings of two different people, said so in its
manifest: the face of one actor (CREMA-D, Cao et al. 2014) performing expressions on cue,
and the wrist physiology of one participant of the Stress-Predict study (Iqbal et al. 2022)
during a rest baseline, a job-interview stress task and the rest after it. The face was
acted and the physiology was lived; they were never recorded together, so the demo shows
what the agent does with a face and a body, not a measurement of either.

What the script does, all of it deterministic (no randomness, fixed encoder settings):

- physiology: three cuts of subject `SUBJECT`'s recording, each put end to end on a new
  time axis (`PARTS`): 180 s of the baseline (its 240-420 s, where the E4 lost the fewest
  beats), the first 180 s of the interview, the last 120 s of the rest after it.
  `hr_e4_1hz.csv` becomes one heart-rate notification a second, as a strap sends them
  (hr rounded to an integer bpm, no contact field: the E4 has none), each carrying the
  RR intervals of `ibi.csv` whose beat fell in the second before it (often none: the E4
  drops beats when the wrist moves, and a notification without RR is normal).
  `eda_4hz.csv` is copied sample for sample.
- face: each part shows one or more of the actor's clips, in order, at `FPS` frames per
  second, cycling through that clip's frames. Each frame is converted to greyscale
  (ITU-R 601 luma, what the camera's Y plane holds), cropped to the 240x180 window
  around the head (`CROP`, a closer framing) and scaled with a box filter to 128x96, the
  camera source's default lores size, then stored as PNG: the replay feeds the face
  stage what a Pi 4's lores stream would.

The subject was picked for the demo, not at random: the one of the 17 whose stress, as
the agent read it with its earlier review-based weights, rose most clearly in the
interview and fell after (rest 0.47, task 0.83, relief 0.15; with the fitted stress model
0.42, 0.54, 0.40). The demo illustrates; it does not measure:
docs/evaluations.md has what is measured, and how the same composite reads for all 17.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.sessions.stress_predict import (
    Recording,
    SubjectError,
    read_recording,
    strap_notifications,
)

SUBJECT = "S18"
FPS = 2.0
LORES = (128, 96)
# 4:3 window of the 480x360 clips around the actor's head (x0, y0, x1, y1): a camera
# framing a person at a desk, so the face is ~58 px wide in the 128x96 frame (the whole
# clip scaled down would make it 27 px, below the face quality's useful size)
CROP = (96, 54, 336, 234)
# no commas: frames.csv is plain comma-separated
CREMAD_LICENSE = (
    "Database Contents License 1.0; CREMA-D actor 1001; cite Cao et al. 2014 "
    "doi:10.1109/TAFFC.2014.2336244"
)


@dataclass(frozen=True)
class Part:
    name: str
    phase: str  # a Stress-Predict segments.csv phase
    anchor: str  # "start": the first `seconds` of the phase; "end": the last
    seconds: float
    clips: tuple[str, ...]  # CREMA-D expressions shown in turn, equal shares of the part
    skip_s: float = 0.0  # with anchor "start": begin this far into the phase


PARTS = (
    # 231 s into the baseline (240-420 s of the recording): settled, and the stretch of the
    # rest in which the E4 delivered the most beats, so the heart baseline forms at rest
    Part("rest", "baseline", "start", 180.0, ("neutral",), skip_s=231.0),
    Part("stress task", "interview", "start", 180.0, ("angry", "fear", "disgust")),
    Part("relief", "relax_after_interview", "end", 120.0, ("happy", "neutral")),
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _phase_window(rec: Recording, part: Part) -> tuple[float, float]:
    try:
        start, end = rec.phase(part.phase)
    except SubjectError as exc:
        raise SystemExit(str(exc)) from None
    if end - start < part.seconds:
        raise SystemExit(f"phase {part.phase} is shorter than {part.seconds:g} s")
    if part.anchor == "start":
        if start + part.skip_s + part.seconds > end:
            raise SystemExit(f"phase {part.phase} ends before {part.skip_s:g} s + ...")
        return start + part.skip_s, start + part.skip_s + part.seconds
    return end - part.seconds, end


def physiology(subject_dir: Path) -> tuple[list[str], list[str], list[dict[str, object]], float]:
    """(heart.csv lines, eda.csv lines, the parts with their source windows, start unix time)."""
    rec = read_recording(subject_dir)
    heart_lines, eda_lines, parts = ["t,hr,rr_ms,contact"], ["t,microsiemens"], []
    offset = 0.0
    start_unix = 0.0
    for part in PARTS:
        a, b = _phase_window(rec, part)
        if not parts:
            start_unix = (rec.unix0 or 0.0) + a
        for t, bpm, rr in strap_notifications(rec, a, b):
            heart_lines.append(f"{offset + t - a:.3f},{round(bpm)},{' '.join(rr)},")
        for t, value in rec.eda:
            if a <= t < b:
                eda_lines.append(f"{offset + t - a:.3f},{value}")
        parts.append(
            {
                "name": part.name,
                "from_s": offset,
                "to_s": offset + part.seconds,
                "face": list(part.clips),
                "body": f"{part.phase} {a:.0f}-{b:.0f} s",
            }
        )
        offset += part.seconds
    return heart_lines, eda_lines, parts, start_unix


def face_frames(cremad: Path, out: Path) -> list[str]:
    """frames.csv lines; writes the PNGs it names under out/frames/."""
    from PIL import Image

    by_clip: dict[str, list[str]] = {}
    for row in _rows(cremad / "labels.csv"):
        by_clip.setdefault(row["expression"], []).append(row["file"])
    (out / "frames").mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    lines = ["t,file,license"]
    offset = 0.0
    step = 1.0 / FPS
    for part in PARTS:
        share = part.seconds / len(part.clips)
        for i, clip in enumerate(part.clips):
            files = by_clip[clip]
            n = round(share * FPS)
            for k in range(n):
                source = files[k % len(files)]
                name = f"frames/{clip}_{Path(source).stem.split('_')[-1]}.png"
                if name not in written:
                    with Image.open(cremad / source) as im:
                        grey = im.convert("L").crop(CROP).resize(LORES, Image.Resampling.BOX)
                        grey.save(out / name, format="PNG", optimize=True)
                    written.add(name)
                t = offset + i * share + k * step
                lines.append(f"{t:.3f},{name},{CREMAD_LICENSE}")
        offset += part.seconds
    return lines


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(
    parts: list[dict[str, object]], start_unix: float, inputs: dict[str, str], subject: str
) -> str:
    chosen = (
        f"{subject} was chosen among the 17\n"
        "  Stress-Predict subjects as the one whose published stress rises most clearly in the\n"
        "  interview and falls after: an illustration, not a measurement."
        if subject == SUBJECT
        else f"{subject} is not the shipped\n  demo's participant: the same recipe, for comparison."
    )
    start = datetime.fromtimestamp(start_unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    duration = sum(p.seconds for p in PARTS)
    timeline = "\n".join(
        f"    {p['from_s']:>5.0f}-{p['to_s']:<5.0f} s  {p['name']:<12} face: "
        f"{', '.join(p['face'])}; body: {subject} {p['body']}"  # type: ignore[arg-type]
        for p in parts
    )
    part_yaml = "\n".join(
        f"  - {{name: {p['name']}, from_s: {p['from_s']:g}, to_s: {p['to_s']:g}, "
        f"face: [{', '.join(p['face'])}], body: '{p['body']}'}}"  # type: ignore[arg-type]
        for p in parts
    )
    input_yaml = "\n".join(f"  {name}: {digest}" for name, digest in sorted(inputs.items()))
    return f"""format: emotion-agent-session
version: 1
start: {start}
duration_s: {duration:g}
synthetic: false
description: |
  A COMPOSITE of two real recordings of two different people, never recorded together.
  Built by agent/sessions/build_demo.py (python -m agent.sessions.build_demo); rebuilding
  from the same inputs gives the same bytes.

  Face (camera): CREMA-D actor 1001 (male, 51) saying "Don't forget a jacket" in six
  acted expressions, 10 fps frames of the original clips, shown here at {FPS:g} fps,
  converted to greyscale, cropped to the 240x180 window around the head and scaled to
  {LORES[0]}x{LORES[1]} (the camera's default lores size).
  Cao H., Cooper D. G., Keutmann M. K., Gur R. C., Nenkova A., Verma R., "CREMA-D:
  Crowd-sourced Emotional Multimodal Actors Dataset", IEEE Transactions on Affective
  Computing 5(4):377-390, 2014, doi:10.1109/TAFFC.2014.2336244. The clips are under the
  Database Contents License 1.0; the database under the Open Database License 1.0.

  Body (heart, EDA): participant {subject} of the Stress-Predict study, an Empatica E4 on
  the wrist: its 1 Hz heart rate as strap notifications carrying the RR intervals it
  derived from PPG (with the E4's real gaps), and skin conductance at 4 Hz. Iqbal T.,
  Simpkin A. J., Roshan D., Glynn N., Killilea J., Walsh J., Molloy G., Ganly S., Ryman
  H., Coen E., Elahi A., Wijns W., Shahzad A., "Stress Monitoring Using Wearable Sensors:
  A Pilot Study and Stress-Predict Dataset", Sensors 22(21):8135, 2022,
  doi:10.3390/s22218135. MIT licence.

  Timeline (session seconds; body = the phase and its seconds in {subject}'s recording):
{timeline}
  The expressions were acted on cue, the stress was lived: the face and the body agree
  because the parts were put together that way. {chosen}
license: >-
  Composite: heart and EDA from Stress-Predict (MIT, Iqbal et al. 2022); frames from
  CREMA-D (Database Contents License 1.0, Cao et al. 2014), named per frame in frames.csv
modalities:
  heart: {{file: heart.csv}}
  eda: {{file: eda.csv, rate_hz: 4}}
  camera: {{frames: frames.csv}}
x-parts:
{part_yaml}
x-inputs-sha256:
{input_yaml}
"""


def build(cremad: Path, stress: Path, out: Path, subject_id: str = SUBJECT) -> Path:
    subject = stress / subject_id
    heart, eda, parts, start_unix = physiology(subject)
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "frames").glob("*.png"):
        old.unlink()
    frames = face_frames(cremad, out)
    (out / "heart.csv").write_text("\n".join(heart) + "\n")
    (out / "eda.csv").write_text("\n".join(eda) + "\n")
    (out / "frames.csv").write_text("\n".join(frames) + "\n")
    inputs = {
        f"stress_predict/{subject_id}/{name}": _sha256(subject / name)
        for name in ("segments.csv", "hr_e4_1hz.csv", "ibi.csv", "eda_4hz.csv")
    }
    inputs["cremad_1001/labels.csv"] = _sha256(cremad / "labels.csv")
    (out / "manifest.yaml").write_text(manifest(parts, start_unix, inputs, subject_id))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.sessions.build_demo", description=__doc__)
    p.add_argument("--cremad", required=True, type=Path, metavar="DIR")
    p.add_argument("--stress", required=True, type=Path, metavar="DIR")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo")
    p.add_argument(
        "--subject",
        default=SUBJECT,
        help=f"another Stress-Predict participant (default {SUBJECT}, the shipped one)",
    )
    args = p.parse_args(argv)
    for folder in (args.cremad, args.stress / args.subject):
        if not folder.is_dir():
            print(f"build_demo: no such folder {folder}", file=sys.stderr)
            return 2
    out = build(args.cremad, args.stress, args.out, args.subject)
    print(f"demo session written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
