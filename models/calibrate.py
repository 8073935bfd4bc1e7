"""Fit and measure how an expression model's output is read: flip averaging and temperature.

A build-time step (`python models/build_models.py calibrate --fer2013 PATH [FILE...]`),
needing only the agent's runtime and numpy. For each model it runs the int8 file through
the agent's own ExpressionClassifier on FER2013 PublicTest (the selection split; nothing
else is read), raw (temperature 1), without and with horizontal-flip averaging, then:

- fits the temperature on all of PublicTest (what ships, in models.json "inference");
- measures the expected calibration error (15 bins) before and after;
- and, because a temperature fitted and scored on the same faces flatters itself, also
  scores it cross-fitted: fitted on one half of PublicTest and measured on the other,
  both ways round (a fixed split, seed 0), which is the honest after-figure.

Flip averaging is recorded only where it is asked for (`--flip-average FILE`): it doubles
the per-face inference time, so the choice is the builder's; both accuracies are reported
so the choice can be checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from agent.vision.expressions import ExpressionClassifier
from agent.vision.interpreter import ModelSpec, load_model


def raw_probabilities(path: Path, x: np.ndarray, flip_average: bool) -> np.ndarray:
    """PublicTest probabilities of the int8 file as the agent reads it, temperature 1."""
    model = load_model(path, expected=ModelSpec(path.name))
    clf = ExpressionClassifier(model, temperature=1.0, flip_average=flip_average)
    return clf.predict(x)


def cross_fitted_ece(probs: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """ECE and NLL of a temperature fitted on one half and applied to the other, pooled."""
    half = np.random.default_rng(seed).permutation(len(y)) < len(y) // 2
    out = np.empty_like(probs)
    temps = []
    for fit_on in (half, ~half):
        t = fit_temperature(probs[fit_on], y[fit_on])
        temps.append(t)
        out[~fit_on] = apply_temperature(probs[~fit_on], t)
    return {
        "ece": round(expected_calibration_error(out, y), 4),
        "nll": round(negative_log_likelihood(out, y), 4),
        "temperatures": [round(t, 4) for t in temps],
    }


def _mode(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, fitted temperature, and calibration before and after, for one way of reading."""
    t = fit_temperature(probs, y)
    after = apply_temperature(probs, t)
    return {
        "accuracy": round(float(np.mean(probs.argmax(1) == y)), 4),
        "temperature": round(t, 4),
        "ece_before": round(expected_calibration_error(probs, y), 4),
        "nll_before": round(negative_log_likelihood(probs, y), 4),
        "ece_after_in_sample": round(expected_calibration_error(after, y), 4),
        "nll_after_in_sample": round(negative_log_likelihood(after, y), 4),
        "after_cross_fitted": cross_fitted_ece(probs, y),
    }


def calibrate(path: Path, x: np.ndarray, y: np.ndarray, flip_average: bool) -> dict[str, Any]:
    """{"inference": what the agent applies, "calibration": what it was measured to do}.

    Both ways of reading are fitted, so that the config's `models.flip_average` can turn
    flips on or off and still get a calibrated temperature; `flip_average` is the default
    recorded for the model.
    """
    plain = _mode(raw_probabilities(path, x, False), y)
    flipped = _mode(raw_probabilities(path, x, True), y)
    calibration = {
        "data": "FER2013 PublicTest, int8 model through ExpressionClassifier",
        "bins": 15,
        "flip_average": flip_average,
        "plain": plain,
        "with_flip": flipped,
    }
    inference = {
        "flip_average": flip_average,
        "temperature": plain["temperature"],
        "temperature_with_flip": flipped["temperature"],
    }
    return {"inference": inference, "calibration": calibration}
