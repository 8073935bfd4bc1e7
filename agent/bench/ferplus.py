"""The FER+ crowd's second opinion on FER2013 faces, read in FER2013's seven classes.

FER+ (Barsoum et al. 2016, MIT) had ten people vote on every FER2013 image: neutral,
happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, not-a-face. Here the
emotion votes become a distribution over FER2013's classes (contempt counted as disgust,
"unknown" and "not a face" left out), used two ways:

- as soft training targets (models/fer_data.py, for models/train_expressions.py);
- to measure what one FER2013 label per face cannot: how a model reads the faces the crowd
  itself found ambiguous. A subtle smile (between 30 % and 70 % of the votes for happiness)
  is the case a closed-mouth smile in a real photo resembles, and a model that calls most
  of them neutral misses people who smile little (issue 12: men's smiles). This is a
  figure on the selection split (PublicTest), so it can be used to choose a model.

Offline only: nothing on the device reads FER+ votes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.vision.expressions import EXPRESSIONS

FERPLUS_TO_FER2013 = (6, 3, 5, 4, 0, 1, 2, 1)
"""FER2013 class of each FER+ emotion vote column (neutral, happiness, surprise, sadness,
anger, disgust, fear, contempt); columns 8 and 9 (unknown, not a face) are left out."""

HAPPY = EXPRESSIONS.index("happy")
NEUTRAL = EXPRESSIONS.index("neutral")
SUBTLE_SMILE = (0.3, 0.7)
"""Share of the crowd's emotion votes for happiness that makes a smile subtle: [lo, hi)."""


def vote_distribution(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) share of each image's emotion votes per FER2013 class, and which images have any.

    `votes` is (N, 10) as FER+ gives it, all -1 where FER+ has no row; an image with no
    emotion vote gets a row of zeros and False.
    """
    v = np.clip(np.asarray(votes, dtype=np.float64), 0, None)
    if v.ndim != 2 or v.shape[1] < len(FERPLUS_TO_FER2013):
        raise ValueError(f"FER+ votes must be (N, 10), got {v.shape}")
    dist = np.zeros((len(v), len(EXPRESSIONS)))
    for col, cls in enumerate(FERPLUS_TO_FER2013):
        dist[:, cls] += v[:, col]
    total = dist.sum(axis=1)
    has = total > 0
    dist[has] /= total[has, None]
    return dist, has


def smile_masks(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which images are subtle smiles (see SUBTLE_SMILE) and which clear ones (above it)."""
    dist, has = vote_distribution(votes)
    happy = dist[:, HAPPY]
    subtle = has & (happy >= SUBTLE_SMILE[0]) & (happy < SUBTLE_SMILE[1])
    return subtle, has & (happy >= SUBTLE_SMILE[1])


def crowd_metrics(predicted: np.ndarray, votes: np.ndarray) -> dict[str, Any]:
    """How predicted FER2013 classes read against the crowd's votes.

    - `ferplus_majority_accuracy`: agreement with the crowd's most-voted class;
    - `subtle_smiles_read_happy`: the share of subtle smiles (see SUBTLE_SMILE) predicted
      happy, with their count; `clear_smiles_read_happy` the same above 70 %;
    - `neutral_predicted_share`: how often the model says neutral (set it against the
      labels' share): a neutral wider than the labels' is the usual way subtle smiles are lost.
    """
    pred = np.asarray(predicted, dtype=np.int64)
    dist, has = vote_distribution(votes)
    if len(pred) != len(dist):
        raise ValueError(f"{len(pred)} predictions for {len(dist)} rows of votes")
    if not has.any():
        raise ValueError("no image has a FER+ emotion vote")
    subtle, clear = smile_masks(votes)

    def share(mask: np.ndarray) -> float | None:
        return round(float(np.mean(pred[mask] == HAPPY)), 4) if mask.any() else None

    return {
        "n_with_votes": int(has.sum()),
        "ferplus_majority_accuracy": round(float(np.mean(pred[has] == dist[has].argmax(1))), 4),
        "subtle_smiles": int(subtle.sum()),
        "subtle_smiles_read_happy": share(subtle),
        "clear_smiles": int(clear.sum()),
        "clear_smiles_read_happy": share(clear),
        "neutral_predicted_share": round(float(np.mean(pred[has] == NEUTRAL)), 4),
    }


NEGATIVE = ("angry", "disgust", "fear", "sad")
"""The classes of negative valence: read as happy, they flip what the agent says."""


def happy_readings(confusion: list[list[int]]) -> dict[str, float | None]:
    """What saying happy costs, from a confusion matrix (rows true, columns predicted, in
    EXPRESSIONS order): the share of faces read as happy that are labelled happy, and the
    shares of non-happy and of negative faces (NEGATIVE) read as happy."""
    c = np.asarray(confusion, dtype=np.float64)
    happy = EXPRESSIONS.index("happy")
    negative = [EXPRESSIONS.index(k) for k in NEGATIVE]
    others = [i for i in range(len(EXPRESSIONS)) if i != happy]

    def share(num: float, den: float) -> float | None:
        return float(num / den) if den else None

    return {
        "happy_precision": share(c[happy, happy], c[:, happy].sum()),
        "non_happy_read_happy": share(c[others, happy].sum(), c[others].sum()),
        "negative_read_happy": share(c[negative, happy].sum(), c[negative].sum()),
    }


def crowd_smile_labels(labels: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """FER2013 labels, with every face the crowd's plurality calls happy labelled happy.

    FER2013's single labeller called most subtle smiles something else: of the 1,792
    Training faces 30-70 % of the crowd called happy, 768 are labelled happy, though the
    crowd's plurality says happy for 1,443 of them. A model trained on those labels learns
    that a closed-mouth smile is not happy. This trusts the crowd for smiles, in one
    direction: faces labelled happy keep their label (946 Training faces change).

    Plurality is the most-voted class, a tie going to the class first in FER2013's order:
    happy wins its ties with sad, surprise and neutral (115 of the 946) and loses those with
    angry, disgust and fear (41 Training faces stay as labelled).
    """
    out = np.asarray(labels, dtype=np.int64).copy()
    dist, has = vote_distribution(votes)
    if len(dist) != len(out):
        raise ValueError(f"{len(out)} labels for {len(dist)} rows of votes")
    out[has & (dist.argmax(axis=1) == HAPPY)] = HAPPY
    return out
