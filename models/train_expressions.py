"""Train the project's own facial-expression model on FER2013 and export it to full-int8 TFLite.

A build-time tool (TensorFlow lives in its own venv outside the repo, never on the device):

    /work/tfvenv/bin/python models/train_expressions.py train \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/expr2 \\
        --epochs 70 --widths 24 48 96 192 --blocks 1 2 2 3 --ferplus 0.3
                                                    # add --resume to continue a stopped run
    /work/tfvenv/bin/python models/build_models.py vgg48 \\
        --fer2013 ../shared/data/fer2013/fer2013_train_public.npz --ckpt /work/ckpt/expr2

(the second step exports the best checkpoint to models/emotion_vgg48_int8.tflite, measures
it, fits its temperatures and records it in models.json; `train_expressions.py export`
only writes the file).

Data: FER2013 Training (28,709 faces) with its labels, blended with the FER+ crowd's votes
(`--ferplus MIX`: targets (1 - MIX) * one-hot + MIX * vote share); PublicTest only for
choosing the epoch. An earlier copy of the Training split was heavily blurred, and the
first vgg48 learned behind a fixed Gaussian input blur (`input_blur`, sigma 3.4 px:
MIRROR_PAD + two CONV_2D with constant Gaussian taps); the config of a run keeps that key,
so old checkpoints still export as they were trained. With the sharp split, new runs use
no blur. `--labels crowd_smiles` teaches every face the FER+ crowd's plurality calls happy
as happy (agent/bench/ferplus.py `crowd_smile_labels`: FER2013's labeller called most
closed-mouth smiles neutral); class weights still come from FER2013's label counts.
`--crowd-head WEIGHT` keeps the targets and also trains a second, training-only head on
the crowd's vote distribution alone from the same pooled features (vgg48.with_crowd_head),
so the features learn what the crowd sees while the shipped head keeps targets led by
FER2013's labels; only the shipped network is saved and exported (not with
`--labels crowd_smiles` or `--init`).

Distillation: `--teacher INT8.tflite [...]` mixes the teachers' softened probabilities of
each Training face into the targets (`--distil MIX`, below 1, default 0.5; `--teacher-temperature
T`, default 2; models/teacher.py reads them through the int8 features and the float last
layer, averaged over the teachers, once, into the run's folder).

Fine-tuning: `--init INT8.tflite` starts from an int8 vgg48's weights, dequantized with
BatchNorm folded in (the run's config then says "batchnorm": false, and records the file's
sha256), instead of at random; `--unfold` keeps BatchNorm instead, set from the file and
the Training faces so that the network still computes what the file computes; with
`--lr`, `--warmup`, `--epochs` for a short schedule and `--select last` to keep the last
epoch rather than pick one on PublicTest.

Network: models/vgg48.py (the same definition builds, exports and fine-tunes it).

Recipe: Adam with decoupled weight decay, linear warm-up then cosine decay, batch 64,
label smoothing, class weights (inverse class frequency to the power 0.5: disgust has 436
of 28,709 images), and on-the-fly augmentation: horizontal flip, rotation, scale and
shift (one affine warp), brightness and contrast, random erasing. After every epoch the
float model is scored on PublicTest (accuracy, macro-F1, subtle smiles read happy,
negative faces read happy); the best epoch by accuracy is kept. PublicTest is
the only split read for selection; nothing else is ever touched.

Checkpoints (model, optimizer and epoch, plus the best weights, and the weights of each
of the last --keep-epochs epochs for models/average_weights.py) go to --ckpt, outside
the repository; --resume continues from the last one with the same schedule, and the
data order and augmentation of each epoch are seeded by (seed, epoch). Seeded (numpy,
Python, TensorFlow); multi-threaded CPU kernels are not bit-exact, so a rerun lands close
to, not exactly on, the published figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the agent's own preprocessing and metrics
sys.path.insert(0, str(HERE))  # vgg48.py beside this file

from fer_data import (  # noqa: E402
    augment_fn,
    class_weights,
    ferplus_targets,
    load_fer2013,
    load_ferplus,
    untuned,
)
from vgg48 import (  # noqa: E402
    DEFAULTS,
    LEGACY_DEFAULTS,
    SIZE,
    build_model,
    inference_model,
    load_int8_weights,
    load_int8_weights_unfolded,
    public_inputs,
    with_crowd_head,
)

from agent.bench.ferplus import (  # noqa: E402
    crowd_metrics,
    crowd_smile_labels,
    happy_readings,
    vote_distribution,
)
from agent.vision.expressions import (  # noqa: E402
    EXPRESSIONS,
    classification_metrics,
    preprocess,
)
from agent.vision.interpreter import sha256_of  # noqa: E402

KEEP_EPOCHS = 10
"""How many of a run's last epochs keep their weights (CKPT/epochs) for weight averaging."""


def seed_everything(seed: int) -> None:
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def make_optimizer(cfg: dict[str, Any], steps_per_epoch: int, epochs: int) -> Any:
    import tf_keras as keras

    warm = cfg["warmup"] * steps_per_epoch
    sched = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg["lr"] / 20,
        decay_steps=max(1, epochs * steps_per_epoch - warm),
        alpha=0.01,
        warmup_target=cfg["lr"],
        warmup_steps=warm,
    )
    opt = keras.optimizers.AdamW(learning_rate=sched, weight_decay=cfg["weight_decay"])
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt


def teacher_config(args: argparse.Namespace) -> dict[str, Any]:
    """What a new run records of its teachers (--teacher, --distil, --teacher-temperature);
    exits with a message for a bad value or a file that cannot teach, before any training."""
    from teacher import check_teacher

    from agent.vision.calibration import check_temperature

    mix = 0.5 if args.distil is None else args.distil
    # below 1: the class weights still follow FER2013's label, which must stay in the target
    if not 0.0 < mix < 1.0:
        sys.exit(f"--distil is the teachers' share of the targets, in (0, 1): not {mix}")
    try:
        temperature = check_temperature(
            2.0 if args.teacher_temperature is None else args.teacher_temperature
        )
        for path in args.teacher:
            check_teacher(path)
    except ValueError as exc:
        sys.exit(f"--teacher: {exc}")
    files = [{"file": p.name, "sha256": sha256_of(p)} for p in args.teacher]
    return {"files": files, "mix": mix, "temperature": temperature}


def distil_targets(
    args: argparse.Namespace, teacher: dict[str, Any], faces: np.ndarray, ckpt_dir: Path
) -> np.ndarray:
    """The teachers' soft targets for every Training face (models/teacher.py).

    Computed once into the run's folder with what they were made from (the teachers'
    sha256, the temperature, the faces' sha256): a resumed run reuses them and needs no
    teacher file; targets made from anything else are never reused."""
    import hashlib

    cache = ckpt_dir / "teacher_targets.npz"
    made_from = json.dumps(
        {
            "teachers": [t["sha256"] for t in teacher["files"]],
            "temperature": teacher["temperature"],
            "faces": hashlib.sha256(np.ascontiguousarray(faces).tobytes()).hexdigest(),
        },
        sort_keys=True,
    )
    if cache.is_file():
        with np.load(cache) as c:
            if str(c["made_from"]) == made_from:
                return c["targets"]
        print(f"{cache} was made from other teachers or faces: made again")
    given: dict[str, Path] = {}
    for path in getattr(args, "teacher", None) or []:
        if not path.is_file():
            sys.exit(f"--teacher {path}: no such file")
        given[sha256_of(path)] = path
    missing = [t["file"] for t in teacher["files"] if t["sha256"] not in given]
    if missing:
        sys.exit(f"{cache} is missing: pass the run's teachers again with --teacher "
                 f"({', '.join(missing)}, by their recorded sha256)")  # fmt: skip
    from teacher import teacher_targets

    paths = [given[t["sha256"]] for t in teacher["files"]]
    try:
        soft = teacher_targets(paths, faces, teacher["temperature"])
    except ValueError as exc:
        sys.exit(str(exc))
    with open(cache, "wb") as f:  # a file object: np.savez adds no suffix
        np.savez(f, targets=soft, made_from=made_from)
    names = ", ".join(p.name for p in paths)
    top = soft.max(axis=1).mean()
    print(f"teachers {names}: soft targets at T {teacher['temperature']}, mean top {top:.3f}")
    return soft


def init_file(args: argparse.Namespace, init: dict[str, str]) -> Path:
    """The int8 file a fine-tune starts from: --init, which must be the file its run
    recorded (a run with no checkpoint yet starts again from the same weights)."""
    path = getattr(args, "init", None)
    if path is None or sha256_of(path) != init["sha256"]:
        sys.exit(
            f"this fine-tune has no checkpoint to resume: give --init {init['file']} again "
            f"(sha256 {init['sha256'][:12]}...)"
        )
    return path


def public_metrics(
    model: Any, x_pub: np.ndarray, y_pub: np.ndarray, votes: np.ndarray | None = None
) -> dict[str, Any]:
    """Classification metrics; with the FER+ votes also how it reads smiles (crowd) and
    what reading them costs (happy)."""
    pred = model.predict(x_pub, batch_size=256, verbose=0).argmax(axis=1)
    m = classification_metrics(y_pub, pred)
    if votes is not None:
        m["crowd"] = crowd_metrics(pred, votes)
        m["happy"] = happy_readings(m["confusion"])
    return m


def train(args: argparse.Namespace) -> int:
    ckpt_dir: Path = args.ckpt
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path = ckpt_dir / "state.json"
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        cfg = state["config"]
        if args.epochs and args.epochs != cfg["epochs"]:
            print(f"resume: keeping the run's schedule of {cfg['epochs']} epochs")
        weight = getattr(args, "crowd_head", None)
        if weight is not None and weight != cfg.get("crowd_head", 0.0):
            print(f"resume: keeping the run's crowd head weight {cfg.get('crowd_head', 0.0)}")
        if "teacher" not in cfg and any(
            getattr(args, k, None) is not None for k in ("teacher", "distil", "teacher_temperature")
        ):
            print("resume: this run began without teachers; --teacher, --distil and "
                  "--teacher-temperature are ignored")  # fmt: skip
        elif "teacher" in cfg and (args.distil is not None or args.teacher_temperature is not None):
            t = cfg["teacher"]
            print(f"resume: keeping the run's --distil {t['mix']} and --teacher-temperature "
                  f"{t['temperature']}")  # fmt: skip
        if getattr(args, "bf16_math", False) and not cfg.get("bf16_math"):
            print("resume: keeping the run's float32 math (it began without --bf16-math)")
    else:
        cfg = {**DEFAULTS, "epochs": args.epochs or 70, "seed": args.seed}
        if args.input_blur is not None:
            cfg["input_blur"] = args.input_blur
        if args.ferplus is not None:
            cfg["ferplus_mix"] = args.ferplus
        if args.widths:
            cfg["widths"], cfg["stem"] = args.widths, args.widths[0]
        if args.blocks:
            cfg["blocks"] = args.blocks
        for key in ("lr", "warmup", "labels", "select", "crowd_head"):
            if getattr(args, key, None) is not None:
                cfg[key] = getattr(args, key)
        if getattr(args, "init", None):
            cfg["init"] = {"file": args.init.name, "sha256": sha256_of(args.init)}
            if getattr(args, "unfold", False):
                cfg["init"]["unfold"] = True  # BatchNorm kept, set to compute the file
            else:
                cfg["batchnorm"] = False
        if getattr(args, "bf16_math", False):
            cfg["bf16_math"] = True
        if getattr(args, "teacher", None):
            cfg["teacher"] = teacher_config(args)
        elif getattr(args, "distil", None) is not None or (
            getattr(args, "teacher_temperature", None) is not None
        ):
            sys.exit("--distil and --teacher-temperature need --teacher")
        state = {"config": cfg, "epoch": 0, "best": None, "history": []}
    # With bf16 math, oneDNN may run float32 convolutions and matrix products in bfloat16
    # (AMX or AVX-512 BF16 where the CPU has them; ignored elsewhere). Both names are set:
    # the library's own and TensorFlow's. Read when the first kernel is built, so before TF.
    # The run's config decides, not the shell: a run that did not ask has them cleared.
    for name in ("ONEDNN_DEFAULT_FPMATH_MODE", "TF_SET_ONEDNN_FPMATH_MODE"):
        if cfg.get("bf16_math"):
            os.environ[name] = "BF16"
        elif os.environ.pop(name, None) is not None:
            print(f"{name} cleared: this run's config does not ask for bf16 math")
    if cfg.get("bf16_math"):
        print("bf16 math: oneDNN may compute float32 convolutions and matrix products in bfloat16")
    import tensorflow as tf
    import tf_keras as keras

    seed_everything(cfg["seed"])
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    cfg = {**LEGACY_DEFAULTS, **cfg}  # runs begun before these keys were recorded
    x_tr, y_tr, x_pub, y_pub = load_fer2013(args.fer2013)
    xp = public_inputs(cfg, x_pub)  # what the agent feeds the model, after its input blur
    cw = class_weights(y_tr, cfg["class_weight_power"])
    print("class weights", dict(zip(EXPRESSIONS, np.round(cw, 3).tolist(), strict=True)))
    steps = len(y_tr) // cfg["batch"]

    model = build_model(cfg)  # what ships; `fitted` adds the crowd head when the run has one
    crowd_head = float(cfg.get("crowd_head", 0.0))
    if crowd_head and ("init" in cfg or cfg.get("labels") == "crowd_smiles"):
        sys.exit("--crowd-head trains from scratch on the recipe's labels: not with --init "
                 "or --labels crowd_smiles")  # fmt: skip
    fitted = with_crowd_head(model) if crowd_head else model
    opt = make_optimizer(cfg, steps, cfg["epochs"])
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"])
    if crowd_head:
        fitted.compile(
            optimizer=opt,
            loss=[loss, keras.losses.CategoricalCrossentropy()],
            loss_weights=[1.0, crowd_head],
            metrics=[["accuracy"], []],
        )
    else:
        fitted.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    print(f"vgg48: {model.count_params():,} parameters; config {json.dumps(cfg)}")

    ck = tf.train.Checkpoint(model=fitted, optimizer=opt)
    manager = tf.train.CheckpointManager(ck, str(ckpt_dir / "last"), max_to_keep=2)
    start = 0
    if args.resume and manager.latest_checkpoint:
        ck.restore(manager.latest_checkpoint).expect_partial()
        start = state["epoch"]
        print(f"resumed from {manager.latest_checkpoint} at epoch {start}")
    elif "init" in cfg:  # a fine-tune with no checkpoint restored starts from its file
        init = init_file(args, cfg["init"])
        if cfg["init"].get("unfold"):
            load_int8_weights_unfolded(model, init, public_inputs(cfg, x_tr))
        else:
            load_int8_weights(model, init)
        m = public_metrics(model, xp, y_pub)
        print(
            f"started from {init} ({cfg['init']['sha256'][:12]}...): float PublicTest "
            f"{m['accuracy']:.4f}"
        )

    # The epoch's shuffle and augmentation are seeded by (seed, epoch), so resuming replays
    # the same data order the uninterrupted run would have seen.
    crowd = cfg.get("labels") == "crowd_smiles"
    votes = (
        load_ferplus(args.fer2013)
        if cfg["ferplus_mix"] or crowd or crowd_head
        else np.zeros((len(y_tr), 10), np.int64)
    )
    labels = crowd_smile_labels(y_tr, votes) if crowd else y_tr
    onehot = ferplus_targets(votes, labels, cfg["ferplus_mix"])
    sw = cw[labels]  # weights from FER2013's label counts, by the class a face is taught
    if "teacher" in cfg:
        mix = cfg["teacher"]["mix"]
        onehot = (1 - mix) * onehot + mix * distil_targets(args, cfg["teacher"], x_tr, ckpt_dir)
        onehot = onehot.astype(np.float32)
    targets, weights = onehot, sw
    if crowd_head:  # the crowd head learns the vote share; faces with no votes teach it nothing
        share, has = vote_distribution(votes)
        if not has.any():
            sys.exit(f"--crowd-head: {args.fer2013} has no FER+ votes for the Training faces")
        targets = (onehot, share.astype(np.float32))
        weights = (sw, has.astype(np.float32))
    with np.load(args.fer2013) as d:  # optional: how each epoch reads smiles, where present
        votes_pub = d["ferplus_public"].astype(np.int64) if "ferplus_public" in d else None
    if votes_pub is not None and not (votes_pub >= 0).any():
        votes_pub = None

    def epoch_data(epoch: int) -> Any:
        order = np.random.default_rng([cfg["seed"], epoch]).permutation(len(y_tr))
        pick = tf.nest.map_structure(lambda a: a[order], (targets, weights))
        ds = tf.data.Dataset.from_tensor_slices((x_tr[order], *pick))
        ds = ds.batch(cfg["batch"], drop_remainder=True)
        jitter = (tuple(cfg["scale_jitter"]), cfg["shift_jitter"])
        aug = augment_fn(cfg["seed"] * 1000 + epoch, *jitter)
        ds = ds.map(aug, num_parallel_calls=1)
        return untuned(ds.prefetch(2))

    for epoch in range(start, cfg["epochs"]):
        t0 = time.time()
        hist = fitted.fit(epoch_data(epoch), epochs=1, verbose=args.verbose)
        train_s = time.time() - t0
        acc_key = next(k for k in hist.history if k.endswith("accuracy"))
        m = public_metrics(model, xp, y_pub, votes_pub)
        smiles = m.get("crowd", {}).get("subtle_smiles_read_happy")  # None without votes
        negative = m.get("happy", {}).get("negative_read_happy")
        rec = {
            "epoch": epoch + 1,
            "loss": round(float(hist.history["loss"][-1]), 4),  # with the crowd head's share
            "train_acc": round(float(hist.history[acc_key][-1]), 4),
            "public_acc": round(m["accuracy"], 4),
            "public_macro_f1": round(m["macro_f1"], 4),
            "public_subtle_smiles_happy": smiles,
            "public_negative_read_happy": None if negative is None else round(negative, 4),
            "lr": float(opt.learning_rate),  # the schedule's value at the last step
            "seconds": round(time.time() - t0, 1),
            "train_seconds": round(train_s, 1),
        }
        for part in ("probabilities_loss", "crowd_loss"):  # each head's own, where two
            if part in hist.history:
                rec[part] = round(float(hist.history[part][-1]), 4)
        state["history"].append(rec)
        last = cfg.get("select") == "last"  # a fine-tune keeps its last epoch, chosen by no one
        if last or state["best"] is None or m["accuracy"] > state["best"]["public_acc"]:
            model.save_weights(str(ckpt_dir / "best.weights.h5"))
            state["best"] = rec
        if epoch >= cfg["epochs"] - args.keep_epochs:  # for models/average_weights.py
            (ckpt_dir / "epochs").mkdir(exist_ok=True)
            model.save_weights(str(ckpt_dir / "epochs" / f"epoch-{epoch + 1:03d}.weights.h5"))
        manager.save()
        state["epoch"] = epoch + 1
        state_path.write_text(json.dumps(state, indent=1))
        best = state["best"]
        print(
            f"epoch {epoch + 1}/{cfg['epochs']} {rec['seconds']:.0f}s loss {rec['loss']:.4f} "
            f"train {rec['train_acc']:.4f} public {rec['public_acc']:.4f} "
            f"F1 {rec['public_macro_f1']:.4f} subtle smiles {rec['public_subtle_smiles_happy']} "
            f"negative->happy {rec['public_negative_read_happy']} lr {rec['lr']:.2e} "
            f"| best {best['public_acc']:.4f} @{best['epoch']}",
            flush=True,
        )
    return 0


def representative_dataset(
    x_train: np.ndarray, size: tuple[int, int], calibration: int, seed: int
) -> Any:
    """Full-int8 calibration: a fixed random sample of the Training split only (never
    PublicTest), preprocessed by the agent's own code, one face per batch."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_train), size=calibration, replace=False))
    calib = preprocess(x_train[idx], size)

    def representative() -> Any:
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    return representative


def export(
    fer2013: Path, ckpt: Path, out: Path, calibration: int = 8000, seed: int = 0
) -> dict[str, Any]:
    """Best checkpoint -> full-int8 TFLite (int8 in and out), calibrated on Training images.

    Returns what build_models.py records: the float model's PublicTest metrics, the config,
    the training history and the calibration used.
    """
    import tensorflow as tf

    state = json.loads((ckpt / "state.json").read_text())
    cfg = {**LEGACY_DEFAULTS, **state["config"]}
    net = build_model(cfg)
    net.load_weights(str(ckpt / "best.weights.h5"))
    model = inference_model(cfg, net)
    x_tr, _, x_pub, y_pub = load_fer2013(fer2013)
    representative = representative_dataset(x_tr, SIZE, calibration, seed)

    # batch 1, as the agent runs it
    fixed = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, *SIZE, 1], tf.float32, name="face")
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fixed], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    out.write_bytes(conv.convert())
    float_m = public_metrics(model, preprocess(x_pub, SIZE), y_pub)
    return {
        "config": cfg,
        "parameters": int(model.count_params()),
        "float_public": float_m,
        "float_pred": model.predict(preprocess(x_pub, SIZE), batch_size=256, verbose=0).argmax(1),
        "best": state["best"],
        "history": state["history"],
        "tensorflow": tf.__version__,
        "calibration": f"{calibration} FER2013 Training images, numpy seed {seed}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=["train", "export"])
    p.add_argument("--fer2013", type=Path, required=True, help="fer2013_train_public.npz")
    p.add_argument("--ckpt", type=Path, default=Path("/work/ckpt/expr"), help="outside the repo")
    p.add_argument("--epochs", type=int, default=None, help="schedule length (default 70)")
    p.add_argument("--resume", action="store_true", help="continue from --ckpt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--input-blur",
        type=float,
        default=None,
        metavar="SIGMA",
        help="Gaussian blur the shipped model applies to its input, to match blurred training "
        "images (default 0: the Training split is sharp; the first vgg48 used 3.4)",
    )
    p.add_argument(
        "--ferplus",
        type=float,
        default=None,
        metavar="MIX",
        help="weight of the FER+ vote distribution in the training targets (default 0.3)",
    )
    p.add_argument("--widths", type=int, nargs=4, default=None, help="stage widths")
    p.add_argument("--blocks", type=int, nargs=4, default=None, help="convolutions per stage")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="INT8.tflite",
        help="fine-tune: start from this int8 vgg48's weights (BatchNorm folded in) instead "
        "of at random",
    )
    p.add_argument(
        "--labels",
        choices=["fer2013", "crowd_smiles"],
        default=None,
        help="crowd_smiles: faces the FER+ crowd's plurality calls happy are taught as happy "
        "(agent/bench/ferplus.py crowd_smile_labels); default fer2013",
    )
    p.add_argument(
        "--unfold",
        action="store_true",
        help="with --init: keep BatchNorm, set so the network computes what the file computes, "
        "instead of folding it into the convolutions",
    )
    p.add_argument(
        "--crowd-head",
        type=float,
        default=None,
        metavar="WEIGHT",
        help="train a second, training-only head on the FER+ crowd's vote distribution, its "
        "loss weighted WEIGHT (vgg48.with_crowd_head; default 0: none). The shipped network "
        "is unchanged",
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs (default 2)")
    p.add_argument(
        "--select",
        choices=["public_acc", "last"],
        default=None,
        help="which epoch is kept: the best on PublicTest (default) or the last",
    )
    p.add_argument(
        "--keep-epochs",
        type=int,
        default=KEEP_EPOCHS,
        metavar="N",
        help="keep the weights of the last N epochs in CKPT/epochs, for models/average_weights.py "
        f"(default {KEEP_EPOCHS})",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        metavar="INT8.tflite",
        help="distil from these int8 models (averaged): their softened probabilities on "
        "each Training face join the targets (models/teacher.py); kept on --resume",
    )
    p.add_argument(
        "--distil",
        type=float,
        default=None,
        metavar="MIX",
        help="with --teacher: the teachers' share of the targets, below 1 (default 0.5)",
    )
    p.add_argument(
        "--teacher-temperature",
        type=float,
        default=None,
        metavar="T",
        help="with --teacher: the temperature that softens their logits (default 2)",
    )
    p.add_argument(
        "--bf16-math",
        action="store_true",
        help="let oneDNN compute float32 convolutions and matrix products in bfloat16 where "
        "the CPU has AMX or AVX-512 BF16 (Keras's pass 70 -> 63 s an epoch on a 2-core Xeon "
        "with AMX); recorded in the run's config and kept on --resume",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "emotion_vgg48_int8.tflite")
    p.add_argument("--calibration", type=int, default=8000)
    args = p.parse_args(argv)
    if args.unfold and args.init is None:
        p.error("--unfold restores BatchNorm in a fine-tune: it needs --init INT8.tflite")
    if args.crowd_head is not None and args.crowd_head < 0:
        p.error("--crowd-head WEIGHT must be 0 or more")
    if args.step == "train":
        return train(args)
    info = export(args.fer2013, args.ckpt, args.out, args.calibration)
    m = info["float_public"]
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes); float PublicTest {m['accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
