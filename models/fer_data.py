"""FER2013 as the expression model learns from it: a build-time module (numpy; TensorFlow
only inside `augment_fn` and `untuned`).

The Training and PublicTest splits, the FER+ crowd's votes blended into the targets, class
weights from the label counts, the on-the-fly augmentation, and how a training pipeline
runs (`untuned`). Shared by training (train_expressions.py), the refits (refit_head.py,
stage4_refit.py) and their probes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from vgg48 import SIZE

from agent.bench.ferplus import vote_distribution
from agent.vision.expressions import EXPRESSIONS


def ferplus_targets(votes: np.ndarray, labels: np.ndarray, mix: float) -> np.ndarray:
    """Training targets: the FER2013 label blended with the FER+ crowd's vote distribution.

    (1 - mix) * one-hot(FER2013 label) + mix * (FER+ emotion votes / their sum). Images FER+
    has no votes for (all -1, or no emotion vote) keep their one-hot label. A pure function
    of its inputs, so a resumed run rebuilds the same targets.
    """
    onehot = np.eye(len(EXPRESSIONS), dtype=np.float32)[labels]
    if not mix:
        return onehot
    dist, has = vote_distribution(votes)
    out = onehot.copy()
    out[has] = (1.0 - mix) * onehot[has] + mix * dist[has].astype(np.float32)
    return out


def load_ferplus(path: Path) -> np.ndarray:
    """FER+ votes for the Training images, (N, 10); all -1 where FER+ has none."""
    with np.load(path) as d:
        return d["ferplus_train"].astype(np.int64)


def load_fer2013(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and PublicTest images and labels (the FER+ votes are read by `load_ferplus`)."""
    with np.load(path) as d:
        return (
            d["x_train"],
            d["y_train"].astype(np.int64),
            d["x_public"],
            d["y_public"].astype(np.int64),
        )


def augment_fn(seed: int, scale: tuple[float, float], shift: float) -> Any:
    """Batch of uint8 faces (B, 48, 48) -> augmented model input (B, 48, 48, 1) in [-1, 1].

    `scale` and `shift` bound the random zoom and the shift (a share of the side): live
    crops are framed a little differently from FER2013's (looser, the eyes higher), and the
    jitter lets the network see faces framed either way.
    """
    import tensorflow as tf

    h, w = SIZE
    gen = tf.random.Generator.from_seed(seed)
    yy = tf.range(h, dtype=tf.float32)[None, :, None, None]
    xx = tf.range(w, dtype=tf.float32)[None, None, :, None]

    def aug(x: Any, y: Any, sw: Any) -> Any:
        x = tf.cast(x, tf.float32)[..., None] / 255.0
        b = tf.shape(x)[0]
        # horizontal flip
        flip = gen.uniform([b, 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
        # one affine warp: rotation +-15 deg, zoom and shift
        ang = gen.uniform([b], -15.0, 15.0) * (np.pi / 180.0)
        s = gen.uniform([b], scale[0], scale[1])
        tx = gen.uniform([b], -shift, shift) * w
        ty = gen.uniform([b], -shift, shift) * h
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        a0, a1 = tf.cos(ang) / s, tf.sin(ang) / s
        b0, b1 = -tf.sin(ang) / s, tf.cos(ang) / s
        a2 = cx - a0 * cx - a1 * cy - tx
        b2 = cy - b0 * cx - b1 * cy - ty
        zeros = tf.zeros_like(a0)
        m = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=m,
            output_shape=tf.constant([h, w]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
        # brightness and contrast
        c = gen.uniform([b, 1, 1, 1], 0.7, 1.3)
        br = gen.uniform([b, 1, 1, 1], -0.12, 0.12)
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = tf.clip_by_value((x - mean) * c + mean + br, 0.0, 1.0)
        # random erasing: a 8-20 px box of uniform grey on a quarter of the faces
        eh = gen.uniform([b, 1, 1, 1], 8.0, 20.0)
        ew = gen.uniform([b, 1, 1, 1], 8.0, 20.0)
        ey = gen.uniform([b, 1, 1, 1], 0.0, 1.0) * (h - eh)
        ex = gen.uniform([b, 1, 1, 1], 0.0, 1.0) * (w - ew)
        on = gen.uniform([b, 1, 1, 1]) < 0.25
        box = (yy >= ey) & (yy < ey + eh) & (xx >= ex) & (xx < ex + ew) & on
        x = tf.where(box, gen.uniform([b, 1, 1, 1]), x)
        return x * 2.0 - 1.0, y, sw

    return aug


def untuned(ds: Any) -> Any:
    """`ds` with tf.data's autotuning off, for a pipeline whose parallelism is set by hand.

    With it on, 4 of a run's first 9 epochs spent 51 to 58 s after Keras's training pass
    with the main thread in RootDataset::Iterator's destructor (py-spy), which in
    TensorFlow's source joins the autotuning thread; Keras ends the iterator after every
    epoch (models/EXPERIMENTS.md, "Training time"). Values and order do not change.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def class_weights(y: np.ndarray, power: float) -> np.ndarray:
    counts = np.bincount(y, minlength=len(EXPRESSIONS)).astype(np.float64)
    wts = (len(y) / (len(EXPRESSIONS) * counts)) ** power
    return (wts / np.sum(wts * counts / len(y))).astype(np.float32)  # mean weight 1
