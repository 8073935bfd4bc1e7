"""Average a vgg48 run's weights over its last epochs, with BatchNorm statistics recomputed.

A build-time step (TensorFlow venv, never on the device):

    /work/tfvenv/bin/python models/average_weights.py \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz \\
        --ckpt /work/ckpt/RUN --epochs 61 70 --out /work/ckpt/RUN_avg
    /work/tfvenv/bin/python models/build_models.py vgg48 \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/RUN_avg

Why: late in a cosine schedule the weights wander around a wide minimum; their plain mean
(stochastic weight averaging, Izmailov et al. 2018) tends to sit nearer its centre and
read unseen faces slightly better than any one epoch, and it is chosen by nobody: the
window is fixed before the run is scored, where the best epoch is picked on PublicTest.

Averaged convolutions no longer match any epoch's BatchNorm moving statistics, so those
are recomputed ("precise BN", for any run with BatchNorm: from scratch or `--unfold`; a
folded fine-tune has none): layer by layer, in order, the exact per-channel mean and
variance of each BatchNorm's input over the whole Training split, unaugmented, with every
earlier layer already in inference mode, as the exported network will run.

Per-epoch weights come from `--from` (default RUN/epochs): `epoch-NNN.weights.h5`, which
`train_expressions.py train` keeps for the last `--keep-epochs` epochs. The output folder
(a new one: the run's own best epoch is never overwritten) holds what the `vgg48` export
step reads: `state.json` (the run's config and history, plus what was averaged) and
`best.weights.h5`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def mean_weights(snapshots: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Element-wise mean of several snapshots of the same network's weight list."""
    if not snapshots:
        raise ValueError("no snapshots to average")
    shapes = [tuple(w.shape) for w in snapshots[0]]
    for i, snap in enumerate(snapshots[1:], 1):
        if [tuple(w.shape) for w in snap] != shapes:
            raise ValueError(f"snapshot {i} does not have the first one's shapes")
    return [
        np.mean([s[k].astype(np.float64) for s in snapshots], axis=0).astype(snapshots[0][k].dtype)
        for k in range(len(shapes))
    ]


def epoch_source(folder: Path, epoch: int) -> Path:
    """The weights one epoch left behind (`train --keep-epochs`)."""
    h5 = folder / f"epoch-{epoch:03d}.weights.h5"
    if not h5.is_file():
        raise FileNotFoundError(f"no weights for epoch {epoch}: {h5} (train keeps the last "
                                "--keep-epochs epochs)")  # fmt: skip
    return h5


def recompute_batchnorm(net: Any, x: np.ndarray) -> int:
    """Set every BatchNorm's moving statistics to its input's exact Training moments, in
    order (each layer's input already runs through the recomputed layers before it)."""
    from tf_keras import layers
    from vgg48 import batchnorm_input_moments

    bns = [ly for ly in net.layers if isinstance(ly, layers.BatchNormalization)]
    for bn in bns:
        mean, var = batchnorm_input_moments(net, bn, x)
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
    return len(bns)


def average_run(
    fer2013: Path, ckpt: Path, first: int, last: int, out: Path, source: Path | None = None
) -> dict[str, Any]:
    import train_expressions as te
    from fer_data import load_fer2013
    from vgg48 import LEGACY_DEFAULTS, build_model, public_inputs

    state = json.loads((ckpt / "state.json").read_text())
    cfg = {**LEGACY_DEFAULTS, **state["config"]}
    if out.resolve() == ckpt.resolve() or (out / "state.json").exists():
        raise SystemExit(f"{out} holds a run already: give a new folder")
    if not 1 <= first <= last <= state["epoch"]:
        raise SystemExit(f"epochs {first}-{last}: the run in {ckpt} has run {state['epoch']}")
    folder = source or ckpt / "epochs"
    net = build_model(cfg)
    snaps = []
    for epoch in range(first, last + 1):
        net.load_weights(str(epoch_source(folder, epoch)))
        snaps.append([w.copy() for w in net.get_weights()])
    net.set_weights(mean_weights(snaps))
    x_tr, _, x_pub, y_pub = load_fer2013(fer2013)
    count = recompute_batchnorm(net, public_inputs(cfg, x_tr))
    m = te.public_metrics(net, public_inputs(cfg, x_pub), y_pub)
    out.mkdir(parents=True, exist_ok=True)
    net.save_weights(str(out / "best.weights.h5"))
    averaged = {
        "epochs": [first, last],
        "batchnorm": (
            f"{count} layers' statistics recomputed on FER2013 Training, unaugmented"
            if count
            else "none (BatchNorm folded into the convolutions)"
        ),
        "from": str(ckpt),
    }
    best = {
        "epoch": f"{first}-{last} averaged",
        "public_acc": round(m["accuracy"], 4),
        "public_macro_f1": round(m["macro_f1"], 4),
    }
    new_state = {**state, "config": {**state["config"], "averaged": averaged}, "best": best}
    (out / "state.json").write_text(json.dumps(new_state, indent=1))
    return {"averaged": averaged, "float_public": best}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fer2013", type=Path, required=True, help="fer2013_train_public.npz")
    p.add_argument("--ckpt", type=Path, required=True, help="the run's folder (state.json)")
    p.add_argument("--epochs", type=int, nargs=2, required=True, metavar=("FIRST", "LAST"))
    p.add_argument("--out", type=Path, required=True, help="a new folder for the export step")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="where the per-epoch weights are (default CKPT/epochs)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    info = average_run(args.fer2013, args.ckpt, *args.epochs, args.out, args.source)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
