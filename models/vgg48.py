"""vgg48, the project's own expression network: its definition, shared by training and export.

A build-time module (TensorFlow, imported inside the functions, lives in its own venv
outside the repo, never on the device).

Network ("vgg48"): 48x48x1 input (FER2013's native size, so the agent's `preprocess`
resizes nothing for FER2013 crops), x/255*2-1; the input blur if the run has one; a 3x3
convolution stem, then four stages of 3x3 convolution -> BN -> ReLU (widths 24, 48, 96,
192 by default, the first vgg48 16-128; 1, 2, 2, 3 convolutions)
separated by 2x2 max pooling, global average pooling, dropout, a dense layer and a
softmax. BatchNorm folds into the convolutions at conversion, so the int8 graph holds only
MIRROR_PAD, CONV_2D, MAX_POOL_2D, MEAN, FULLY_CONNECTED and SOFTMAX, all int8 builtins in
both runtimes. A depthwise-separable variant (`"block": "sep"`, 32-256 wide, identity
residuals) was tried first: it learned far more slowly in the CPU budget (PublicTest 18 %
after 3 epochs) and ran slower in int8 than these plain convolutions (tflite-runtime on
x86 8.3 ms vs 1.2 ms per face), so plain 3x3 convolutions ship.

A fine-tune (`train_expressions.py train --init INT8.tflite`) builds the network with
BatchNorm already folded into the convolutions' biases (config "batchnorm": false) and
starts it from the int8 file's weights (`load_int8_weights`). With `--unfold` it keeps
BatchNorm and sets it so the network computes what the file computes
(`load_int8_weights_unfolded`), so that it trains as the original run did; measured, that
changed little (EXPERIMENTS.md, "run A with BatchNorm").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.expressions import EXPRESSIONS, preprocess

SIZE = (48, 48)
DEFAULTS: dict[str, Any] = {
    "block": "plain",
    "widths": [24, 48, 96, 192],
    "blocks": [1, 2, 2, 3],
    "stem": 24,
    "batch": 64,
    "lr": 2e-3,
    "weight_decay": 5e-3,
    "warmup": 2,
    "label_smoothing": 0.1,
    "class_weight_power": 0.5,
    "dropout": 0.3,
    "input_blur": 0.0,
    "ferplus_mix": 0.3,
    "scale_jitter": [0.85, 1.15],
    "shift_jitter": 0.12,
    "seed": 0,
    "labels": "fer2013",
    "select": "public_acc",
    "crowd_head": 0.0,
}
LEGACY_DEFAULTS: dict[str, Any] = {
    "input_blur": 3.4,
    "ferplus_mix": 0.0,
    "scale_jitter": [0.9, 1.1],
    "shift_jitter": 0.1,
}
"""What a run's config meant before each of these keys was recorded (the first vgg48)."""


def build_model(cfg: dict[str, Any]) -> Any:
    import tf_keras as keras
    from tf_keras import layers

    reg = None  # decoupled weight decay lives in the optimizer

    folded = not cfg.get("batchnorm", True)  # fine-tuned from an int8 file: BN folded in
    if folded and cfg.get("block", "sep") != "plain":
        raise ValueError("only plain blocks fold BatchNorm into a convolution's bias")

    def bn(x: Any) -> Any:
        if folded:
            return x
        return layers.BatchNormalization(momentum=0.99, epsilon=1e-3)(x)

    inp = keras.Input((*SIZE, 1), name="face")
    x = layers.Conv2D(cfg["stem"], 3, padding="same", use_bias=folded, kernel_regularizer=reg)(inp)
    x = layers.ReLU()(bn(x))
    for stage, (width, count) in enumerate(zip(cfg["widths"], cfg["blocks"], strict=True)):
        if stage:
            x = layers.MaxPooling2D(2)(x)
        for _ in range(count):
            if cfg.get("block", "sep") == "plain":  # a full 3x3 convolution
                x = layers.Conv2D(width, 3, padding="same", use_bias=folded)(x)
                x = layers.ReLU()(bn(x))
                continue
            y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
            y = layers.ReLU()(bn(y))
            y = layers.Conv2D(width, 1, use_bias=False, kernel_regularizer=reg)(y)
            y = bn(y)
            if x.shape[-1] == width:
                y = layers.Add()([x, y])
            x = layers.ReLU()(y)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(cfg["dropout"])(x)
    x = layers.Dense(len(EXPRESSIONS))(x)
    out = layers.Softmax(name="probabilities")(x)
    return keras.Model(inp, out, name="vgg48")


def with_crowd_head(net: Any) -> Any:
    """The network with a second, training-only head on the same pooled features: a dense
    layer and softmax named "crowd", taught the FER+ crowd's vote distribution.

    Why: the shipped head learns targets led by FER2013's one labeller (mixed 0.3 with the
    crowd's votes), who called most closed-mouth smiles something else; the crowd calls them
    happy. A second linear read-out of the same features, taught the crowd's votes alone,
    asks the features to hold what the crowd sees, while the first head keeps the targets
    led by the labels PublicTest is scored by. The model that ships is `net` (the same
    layers), so the int8 graph, its size and its speed do not change.
    """
    import tf_keras as keras
    from tf_keras import layers

    drops = [ly for ly in net.layers if isinstance(ly, layers.Dropout)]
    if len(drops) != 1:
        raise ValueError(f"the crowd head reads the pooled features after the one Dropout; "
                         f"{net.name} has {len(drops)}")  # fmt: skip
    pooled = drops[0].output
    x = layers.Dense(len(EXPRESSIONS), name="crowd_logits")(pooled)
    crowd = layers.Softmax(name="crowd")(x)
    return keras.Model(net.input, [net.output, crowd], name="vgg48_crowd")


def gaussian_taps(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian, 3 sigma each side."""
    r = int(np.ceil(3 * sigma))
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (t / t.sum()).astype(np.float32)


def blur(x: Any, sigma: float) -> Any:
    """Separable Gaussian blur of (B, H, W, 1) with mirrored borders (MIRROR_PAD + 2 CONV_2D).

    The FER2013 Training images of the reference data are heavily blurred (see MODELS.md:
    their mean absolute pixel gradient is 3.8 grey levels against 14.0 in PublicTest, which
    a Gaussian of sigma 3.4 px applied to PublicTest reproduces, along with the 30 % lower
    contrast). A network trained on them must see inputs blurred the same way, so the
    shipped model blurs its own input first; training skips this layer (the data already
    went through it).
    """
    import tensorflow as tf

    taps = gaussian_taps(sigma)
    r = len(taps) // 2
    x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    x = tf.nn.conv2d(x, tf.constant(taps.reshape(-1, 1, 1, 1)), 1, "VALID")
    return tf.nn.conv2d(x, tf.constant(taps.reshape(1, -1, 1, 1)), 1, "VALID")


def inference_model(cfg: dict[str, Any], net: Any) -> Any:
    """What ships: the input blur (if the config has one), then the trained network."""
    import tf_keras as keras
    from tf_keras import layers

    sigma = cfg.get("input_blur", 0)
    if not sigma:
        return net
    inp = keras.Input((*SIZE, 1), name="face")
    x = layers.Lambda(lambda t: blur(t, sigma), name="input_blur")(inp)
    return keras.Model(inp, net(x), name="vgg48_blur")


def public_inputs(cfg: dict[str, Any], x_pub: np.ndarray) -> np.ndarray:
    """PublicTest crops as the trained network sees them inside the shipped model."""
    x = preprocess(x_pub, SIZE)
    sigma = cfg.get("input_blur", 0)
    return blur(x, sigma).numpy() if sigma else x


def load_int8_weights(net: Any, path: Path) -> None:
    """Set a folded vgg48 (config "batchnorm": false) to the weights of an int8 vgg48 file.

    The start of a fine-tune: the float network then reads faces as the int8 file does, up
    to the int8 rounding of weights and activations (measured by the run's first epoch).
    """
    from int8_layers import float_layers
    from tf_keras import layers

    dense = [ly for ly in net.layers if isinstance(ly, layers.Conv2D | layers.Dense)]
    found = float_layers(path)
    if len(found) != len(dense):
        raise ValueError(f"{path.name} has {len(found)} layers, the network {len(dense)}")
    for layer, (kernel, bias) in zip(dense, found, strict=True):
        want = [tuple(w.shape) for w in layer.get_weights()]
        if want != [kernel.shape, bias.shape]:
            raise ValueError(
                f"{path.name}: {layer.name} wants {want}, the file has {kernel.shape}, {bias.shape}"
            )
        layer.set_weights([kernel, bias])


def batchnorm_input_moments(
    net: Any, layer: Any, x: np.ndarray, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population variance of `layer`'s input over all of `x`,
    the network in inference mode, summed in float64 batch by batch."""
    import tensorflow as tf
    import tf_keras as keras

    probe = keras.Model(net.input, layer.input)

    @tf.function
    def sums(xb: Any) -> Any:
        h = tf.cast(probe(xb, training=False), tf.float64)
        return tf.reduce_sum(h, [0, 1, 2]), tf.reduce_sum(h * h, [0, 1, 2]), tf.size(h[..., 0])

    total = total_sq = 0.0
    n = 0
    for i in range(0, len(x), batch):
        s, s2, count = sums(x[i : i + batch])
        total, total_sq, n = total + s.numpy(), total_sq + s2.numpy(), n + int(count)
    return channel_moments(total, total_sq, n)


def channel_moments(total: np.ndarray, total_sq: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Per-channel mean and population variance from running sums over n values each."""
    mean = total / n
    return mean, np.maximum(total_sq / n - mean**2, 0.0)


def load_int8_weights_unfolded(net: Any, path: Path, x: np.ndarray) -> None:
    """Set a vgg48 with BatchNorm to compute what an int8 vgg48 file computes.

    Each convolution gets the file's kernel; its BatchNorm's moving statistics become the
    exact moments of that convolution's output over `x` (the Training faces as the network
    sees them), gamma sqrt(variance + epsilon) and beta the mean plus the file's bias, so in
    inference mode BatchNorm adds the bias and nothing else; in training mode a batch's own
    statistics stand in for those moments, as in the original run. Layer by layer, in order.
    """
    from int8_layers import float_layers
    from tf_keras import layers

    convs = [ly for ly in net.layers if isinstance(ly, layers.Conv2D)]
    bns = [ly for ly in net.layers if isinstance(ly, layers.BatchNormalization)]
    dense = [ly for ly in net.layers if isinstance(ly, layers.Dense)]
    found = float_layers(path)
    if len(convs) != len(bns) or len(found) != len(convs) + len(dense) or len(dense) != 1:
        raise ValueError(f"{path.name} has {len(found)} layers; the network {len(convs)} "
                         f"convolutions, {len(bns)} BatchNorms, {len(dense)} dense")  # fmt: skip
    dense[0].set_weights(list(found[-1]))
    for conv, bn, (kernel, bias) in zip(convs, bns, found[:-1], strict=True):
        conv.set_weights([kernel])
        mean, var = batchnorm_input_moments(net, bn, x)
        gamma = np.sqrt(var + bn.epsilon)
        bn.set_weights([a.astype(np.float32) for a in (gamma, mean + bias, mean, var)])
