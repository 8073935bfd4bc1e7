"""Train vgg48's last stage and head on FER2013 plus labelled photos, earlier stages frozen.

A build-time experiment (round 6 of issue 12). The head-only refits (photo_refit.py) found
the frozen features to be the limit on the London men's smiles; this lets the last stage
(three 3x3 convolutions on the 6 x 6 map, BatchNorm folded) learn as well, on the int8
base's own stage-3 output, cached once, so an epoch costs seconds, not minutes:

    python models/stage4_refit.py cache --fer2013 NPZ --labels LABELS.csv --base BASE \\
        --out /work/ckpt/s3.npz                      # the test venv (ai-edge-litert)
    /work/tfvenv/bin/python models/stage4_refit.py cv --cache /work/ckpt/s3.npz \\
        --weights 30 100 --folds 10                   # TensorFlow
    /work/tfvenv/bin/python models/stage4_refit.py fit --cache /work/ckpt/s3.npz \\
        --weight W --out /work/ckpt/s4_W.npz          # every photo: the candidate's layers
    /work/tfvenv/bin/python models/stage4_refit.py export --base BASE \
        --stage4 /work/ckpt/s4_W.npz --out /work/ckpt/s4_run    # a folder the vgg48 step reads
    /work/tfvenv/bin/python models/build_models.py vgg48 --fer2013 NPZ \
        --ckpt /work/ckpt/s4_run --out DIR                       # the int8 file, measured

The cached inputs are the faces as they are, unaugmented (the London photos bring their 6
views: photo_refit.MARGINS, each mirrored). `cv` folds by person as photo_refit does and
reads each held-out photo's live crop with the float stage on its int8 stage-3 output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

STAGE4_INPUT = (6, 6, 96)
FIRST_LAYER = 6  # float_layers index of stage 4's first convolution (then 7, 8, head 9)


def cache(fer2013: Path, labels: Path, base: Path, out: Path) -> None:
    """Stage-3 outputs (int8, with their scale and zero point) of FER2013 Training and
    PublicTest and of every London view, with targets, weights and the base's layers."""
    from int8_layers import float_layers, interpreter, tensor_per_face
    from photo_refit import person_folds, photo_crops
    from refit_head import training_targets

    it = interpreter(base)
    index = next(
        int(op["inputs"][0])
        for op in it._get_ops_details()
        if op["op_name"] == "CONV_2D"
        and tuple(it.get_tensor_details()[int(op["inputs"][0])]["shape"][1:]) == STAGE4_INPUT
    )
    q = {d["index"]: d for d in it.get_tensor_details()}[index]["quantization_parameters"]
    with np.load(fer2013) as d:
        x, y, votes = d["x_train"], d["y_train"].astype(np.int64), d["ferplus_train"]
        x_pub, y_pub = d["x_public"], d["y_public"]
    _, targets, weights = training_targets(y, votes)
    photos = photo_crops(labels)
    crops = photos["crops"]
    n, v = crops.shape[:2]
    rows = photos["rows"]
    layers = {
        f"layer{i}_{k}": a
        for i, pair in enumerate(float_layers(base)[FIRST_LAYER:])
        for k, a in zip("wb", pair, strict=True)
    }
    np.savez(
        out,
        scale=np.float32(q["scales"][0]),
        zero=np.int32(q["zero_points"][0]),
        fer=tensor_per_face(it, index, x),
        fer_targets=targets.astype(np.float32),
        fer_weights=weights.astype(np.float32),
        public=tensor_per_face(it, index, x_pub),
        y_public=y_pub,
        photos=tensor_per_face(it, index, crops.reshape(n * v, *crops.shape[2:])).reshape(
            n, v, *STAGE4_INPUT
        ),
        y_photos=photos["y"],
        folds10=person_folds(rows, 10, ["gender"]),
        folds5=person_folds(rows, 5, ["gender"]),
        gender=np.array([r.get("gender") or "" for r in rows]),
        **layers,
    )


def real(c: Any, a: np.ndarray) -> np.ndarray:
    """Cached int8 stage-3 outputs as the real numbers they stand for."""
    return (a.astype(np.float32) - int(c["zero"])) * float(c["scale"])


def stage4_model(c: Any) -> Any:
    """Stage 4 + pooling + dropout + head, logits out, set to the base's weights."""
    import tf_keras as keras
    from tf_keras import layers
    from vgg48 import DEFAULTS

    inp = keras.Input(STAGE4_INPUT)
    x = inp
    convs = []
    for _ in range(DEFAULTS["blocks"][-1]):
        conv = layers.Conv2D(DEFAULTS["widths"][-1], 3, padding="same", activation="relu")
        x = conv(x)
        convs.append(conv)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(DEFAULTS["dropout"])(x)
    head = layers.Dense(7)
    model = keras.Model(inp, head(x))
    for i, layer in enumerate([*convs, head]):
        layer.set_weights([c[f"layer{i}_w"], c[f"layer{i}_b"]])
    return model


def train(c: Any, photos: np.ndarray, y: np.ndarray, weight: float, epochs: int = 3) -> Any:
    """The stage trained on FER2013 + the given photos' views (W per photo); seed 0."""
    import tensorflow as tf
    import tf_keras as keras
    from fer_data import untuned
    from photo_refit import photo_targets

    keras.utils.set_random_seed(0)
    n, v = photos.shape[:2]
    t, w = photo_targets(y, v, weight)
    x = np.concatenate([c["fer_real"], real(c, photos.reshape(n * v, *STAGE4_INPUT))])
    targets = np.concatenate([c["fer_targets"], t.astype(np.float32)])
    weights = np.concatenate([c["fer_weights"], w.astype(np.float32)])
    model = stage4_model(c)
    opt = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=5e-3)
    opt.exclude_from_weight_decay(var_names=["bias"])
    model.compile(opt, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x, targets, weights))
    data = data.shuffle(len(x), seed=0, reshuffle_each_iteration=True).batch(64)
    data = untuned(data.prefetch(2))  # autotuning would have injected a prefetch
    model.fit(data, epochs=epochs, verbose=0)
    return model


def predict(model: Any, c: Any, q: np.ndarray) -> np.ndarray:
    """Class of each cached int8 stage-3 output by the float stage `model`."""
    return model.predict(real(c, q), batch_size=256, verbose=0).argmax(axis=1)


def export_folder(base: Path, stage4: Path, out: Path, about: dict[str, Any]) -> None:
    """A folder the `vgg48` build step exports from (state.json, best.weights.h5): the
    folded vgg48 at the base's weights, its last stage and head replaced by `stage4`'s."""
    from tf_keras import layers
    from vgg48 import DEFAULTS, build_model, load_int8_weights

    from agent.vision.interpreter import sha256_of

    if (out / "state.json").exists():
        raise SystemExit(f"{out} already holds a run: give a new folder")
    cfg = {**DEFAULTS, "batchnorm": False, "epochs": 3, "select": "last", "stage4_refit": about,
           "init": {"file": base.name, "sha256": sha256_of(base)}}  # fmt: skip
    net = build_model(cfg)
    load_int8_weights(net, base)
    dense = [ly for ly in net.layers if isinstance(ly, layers.Conv2D | layers.Dense)]
    with np.load(stage4) as s4:
        ours = dense[FIRST_LAYER:]
        if len(ours) != 4 or any(f"layer{i}_w" not in s4 for i in range(4)):
            raise SystemExit(f"{stage4}: expected 4 layers (3 convolutions and the head)")
        for i, layer in enumerate(ours):
            layer.set_weights([s4[f"layer{i}_w"], s4[f"layer{i}_b"]])
    out.mkdir(parents=True, exist_ok=True)
    net.save_weights(str(out / "best.weights.h5"))
    last = {"epoch": 3, "seconds": about.get("seconds", 0.0)}  # the whole fit, one record
    state = {"config": cfg, "epoch": 3, "best": last, "history": [last]}
    (out / "state.json").write_text(json.dumps(state, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("cache", "time", "cv", "fit", "export"))
    p.add_argument("--fer2013", type=Path)
    p.add_argument("--labels", type=Path)
    p.add_argument("--base", type=Path)
    p.add_argument("--cache", type=Path)
    p.add_argument("--weights", type=float, nargs="+", default=[30.0, 100.0])
    p.add_argument("--weight", type=float, default=30.0)
    p.add_argument("--folds", type=int, choices=(5, 10), default=10)
    p.add_argument("--stage4", type=Path, help="export: the layers `fit` wrote")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if a.mode == "export":
        from agent.vision.interpreter import sha256_of

        if a.base is None or a.stage4 is None or a.out is None:
            p.error("export needs --base, --stage4 and --out")
        with np.load(a.stage4) as s4:
            about = {
                "stage4": a.stage4.name,
                "sha256": sha256_of(a.stage4),
                "photo_weight": float(s4["weight"]) if "weight" in s4 else None,
                "seconds": float(s4["seconds"]) if "seconds" in s4 else 0.0,
                "data": "FER2013 Training + the labelled photos of --labels (see cache)",
            }
        export_folder(a.base, a.stage4, a.out, about)
        print(f"wrote {a.out}: build_models.py vgg48 --ckpt {a.out}")
        return 0
    if a.mode == "cache":
        cache(a.fer2013, a.labels, a.base, a.out)
        return 0
    c = dict(np.load(a.cache))
    c["fer_real"] = real(c, c["fer"])  # once, not once per fold and weight
    photos, y, gender = c["photos"], c["y_photos"], c["gender"]
    if a.mode == "time":  # one epoch, nothing scored
        t0 = time.perf_counter()
        train(c, photos, y, a.weight, epochs=1)
        print(f"one epoch: {time.perf_counter() - t0:.1f} s")
        return 0
    if a.mode == "fit":
        t0 = time.perf_counter()
        model = train(c, photos, y, a.weight)
        seconds = time.perf_counter() - t0
        pred = predict(model, c, c["public"])
        print(f"PublicTest float (int8 stage-3 inputs): {np.mean(pred == c['y_public']):.4f}")
        layers = [ly for ly in model.layers if ly.get_weights()]
        np.savez(a.out, weight=a.weight, seconds=seconds,
                 **{f"layer{i}_{k}": w for i, ly in enumerate(layers)
                    for k, w in zip("wb", ly.get_weights(), strict=True)})  # fmt: skip
        print(f"wrote {a.out}")
        return 0
    from photo_refit import rates

    folds = c[f"folds{a.folds}"]
    rows = [{"gender": str(g)} for g in gender]
    report = {}
    for weight in a.weights:
        pred = np.empty(len(y), np.int64)
        t0 = time.perf_counter()
        for k in range(a.folds):
            held = folds == k
            model = train(c, photos[~held], y[~held], weight)
            pred[held] = predict(model, c, photos[held, 0])
        report[f"W={weight:g}"] = rates(y, pred, rows, ["gender"])
        print(f"W={weight:g}", json.dumps(report[f"W={weight:g}"]),
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    if a.out is not None:
        a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
