"""Probe: does the last stage's map hold more than its mean? (build-time, no TensorFlow)

vgg48's last layer reads the global average of its last stage (6 x 6 x 192 -> 192), which
forgets where on the face a feature fired; a closed-mouth smile is a shape at the mouth's
corners, low in the face. This probe refits the last layer, as the `smiles` step does
(models/refit_head.py: frozen int8 features, `crowd_smile_labels`, the recipe's targets,
smoothing and class weights), on the map average-pooled to G x G regions instead (G = 1 is
the shipped head), and scores each on PublicTest, float on the int8 features:

    python models/head_grid_probe.py --fer2013 ../shared/data/fer2013/fer2013_train_public.npz \\
        --base /tmp/vgg48_base.tflite --grid 1 2

(`--base`: the network before the refit, `git show a6ac7a6:models/emotion_vgg48_int8.tflite`.)
The L2 weight of each G is chosen by 5-fold cross-validation on Training (held-out loss,
folds by image: FER2013 has no subject ids) from `LAMBDAS`, then the head is refitted on all
of Training. Result and decision: models/EXPERIMENTS.md, "Tried, not kept: a head that knows where".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import refit_head as rh  # noqa: E402
from int8_layers import interpreter, tensor_per_face  # noqa: E402

from agent.bench.ferplus import crowd_metrics, happy_readings  # noqa: E402
from agent.vision.expressions import EXPRESSIONS, classification_metrics  # noqa: E402

LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
FOLDS = 5


def last_stage_maps(path: Path, faces: np.ndarray) -> tuple[np.ndarray, float, int]:
    """The int8 input of the file's one MEAN op for each face, with its scale and zero point."""
    it = interpreter(path)
    means = [op for op in it._get_ops_details() if op["op_name"] == "MEAN"]
    if len(means) != 1:
        raise ValueError(f"{path.name}: expected one MEAN op, found {len(means)}")
    src = int(means[0]["inputs"][0])
    q = next(d for d in it.get_tensor_details() if d["index"] == src)["quantization_parameters"]
    return tensor_per_face(it, src, faces), float(q["scales"][0]), int(q["zero_points"][0])


def grid_pool(maps: np.ndarray, scale: float, zero: int, g: int) -> np.ndarray:
    """(N, H, W, C) int8 maps -> (N, g*g*C) float: the mean of each of g x g regions, in
    (row, column, channel) order, as AVERAGE_POOL_2D then RESHAPE would give them."""
    f = (maps.astype(np.float32) - zero) * scale
    n, h, w, c = f.shape
    if h % g or w % g:
        raise ValueError(f"a {h}x{w} map does not split into {g}x{g} regions")
    return f.reshape(n, g, h // g, g, w // g, c).mean(axis=(2, 4)).reshape(n, -1)


def soft_loss(
    feats: np.ndarray, w: np.ndarray, b: np.ndarray, targets: np.ndarray, weights: np.ndarray
) -> float:
    """The fit's own objective without the penalty: weighted soft-target cross-entropy."""
    z = feats @ w.T + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(weights[:, None] * targets * logp).sum() / len(feats))


def probe(base: Path, fer2013: Path, grids: list[int], cache: Path | None) -> dict[int, Any]:
    with np.load(fer2013) as d:
        x, y, votes = d["x_train"], d["y_train"].astype(np.int64), d["ferplus_train"]
        x_pub, y_pub = d["x_public"], d["y_public"].astype(np.int64)
        votes_pub = d["ferplus_public"].astype(np.int64)
    if cache is not None and cache.is_file():
        with np.load(cache) as c:
            maps, maps_pub, scale, zero = c["train"], c["public"], float(c["scale"]), int(c["zero"])
    else:
        maps, scale, zero = last_stage_maps(base, x)
        maps_pub = last_stage_maps(base, x_pub)[0]
        if cache is not None:
            np.savez(cache, train=maps, public=maps_pub, scale=scale, zero=zero)
    _, targets, weights = rh.training_targets(y, votes)
    head = rh.find_head(interpreter(base))
    folds = np.random.default_rng(0).permutation(len(y)) % FOLDS
    neutral, happy = EXPRESSIONS.index("neutral"), EXPRESSIONS.index("happy")
    results = {}
    for g in grids:
        feats, feats_pub = grid_pool(maps, scale, zero, g), grid_pool(maps_pub, scale, zero, g)
        w0, b0 = np.tile(head.w, g * g) / (g * g), head.b  # starts as the shipped head
        cv = {}
        for lam in LAMBDAS:
            t0 = time.time()
            losses = []
            for k in range(FOLDS):
                tr, te = folds != k, folds == k
                w, b, _ = rh.fit_head(feats[tr], targets[tr], weights[tr], w0, b0, lam)
                losses.append(soft_loss(feats[te], w, b, targets[te], weights[te]))
            cv[lam] = round(float(np.mean(losses)), 5)
            print(f"G={g} L2 {lam:g}: CV loss {cv[lam]:.5f} ({time.time() - t0:.0f} s)", flush=True)
        lam = min(cv, key=cv.__getitem__)
        w, b, info = rh.fit_head(feats, targets, weights, w0, b0, lam)
        pred = (feats_pub @ w.T + b).argmax(axis=1)
        m = classification_metrics(y_pub, pred)
        confusion = np.asarray(m["confusion"])
        results[g] = {
            "l2": lam,
            "cv_loss": cv,
            "public_accuracy": round(m["accuracy"], 4),
            "public_macro_f1": round(m["macro_f1"], 4),
            "subtle_smiles_read_happy": crowd_metrics(pred, votes_pub)["subtle_smiles_read_happy"],
            "neutral_read_happy": round(
                float(confusion[neutral, happy] / confusion[neutral].sum()), 4
            ),
            **happy_readings(m["confusion"]),
            "fit": info,
        }
        print(f"G={g}: {json.dumps(results[g])}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fer2013", type=Path, required=True)
    p.add_argument("--base", type=Path, required=True, help="int8 vgg48 before the refit")
    p.add_argument("--grid", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cache", type=Path, default=None, help="npz to keep the maps between runs")
    args = p.parse_args(argv)
    probe(args.base, args.fer2013, args.grid, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
