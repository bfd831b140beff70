"""Evaluation on a labelled set: accuracy, loss, per-digit metrics, confusion matrix, mistakes,
and the profile of what the model predicts (the reference a bulk run's drift is measured from)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from digitflow.config import LOW_CONFIDENCE
from digitflow.data import model_input

DIGITS = range(10)


@dataclass(frozen=True)
class DigitMetrics:
    digit: int
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class Mistake:
    index: int
    label: int
    predicted: int
    confidence: float


@dataclass(frozen=True)
class PredictionProfile:
    """What a model predicts on `count` images, labels aside: the share of each predicted digit,
    the mean top probability, and the share of predictions below `threshold`."""

    digit_share: list[float]  # 10 values summing to 1 (all 0 for no images)
    mean_confidence: float
    low_confidence_rate: float
    count: int
    threshold: float = LOW_CONFIDENCE

    @classmethod
    def from_counts(
        cls,
        digit_counts: Sequence[int],
        confidence_sum: float,
        low_confidence: int,
        threshold: float = LOW_CONFIDENCE,
    ) -> PredictionProfile:
        """The profile of predictions counted per digit, with their summed top probability and
        how many were below `threshold`."""
        count = sum(digit_counts)
        each = 1 / count if count else 0.0
        return cls(
            digit_share=[float(n * each) for n in digit_counts],
            mean_confidence=float(confidence_sum * each),
            low_confidence_rate=float(low_confidence * each),
            count=int(count),
            threshold=threshold,
        )

    @classmethod
    def from_probabilities(
        cls, probabilities: np.ndarray, threshold: float = LOW_CONFIDENCE
    ) -> PredictionProfile:
        """The profile of predicted probabilities (n, 10)."""
        confidence = probabilities.max(axis=1)
        return cls.from_counts(
            np.bincount(probabilities.argmax(axis=1), minlength=10).tolist(),
            float(confidence.sum()),
            int((confidence < threshold).sum()),
            threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionProfile:
        """The profile `to_dict` wrote; TypeError or ValueError if it is not one."""
        profile = cls(**{item.name: data[item.name] for item in fields(cls) if item.name in data})
        if len(profile.digit_share) != 10:
            raise ValueError(f"digit_share has {len(profile.digit_share)} values, not 10")
        return profile


@dataclass(frozen=True)
class Evaluation:
    """What a model got right and wrong on `count` labelled images."""

    accuracy: float
    loss: float
    count: int
    per_digit: list[DigitMetrics]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit
    mistakes: list[Mistake]
    profile: PredictionProfile

    def to_dict(self, include_mistakes: bool = True) -> dict:
        result = asdict(self)
        if not include_mistakes:
            del result["mistakes"]
        return result


def metrics_from_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Everything `evaluate` reports, from predicted probabilities (n, 10) and true labels (n,)."""
    labels = labels.astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion)
    predicted_counts, support = confusion.sum(axis=0), confusion.sum(axis=1)
    per_digit = [
        DigitMetrics(
            digit=d,
            precision=float(true_positives[d] / predicted_counts[d])
            if predicted_counts[d]
            else 0.0,
            recall=float(true_positives[d] / support[d]) if support[d] else 0.0,
            support=int(support[d]),
        )
        for d in DIGITS
    ]
    picked = probabilities[np.arange(len(labels)), labels]
    wrong = np.flatnonzero(predicted != labels)
    return Evaluation(
        accuracy=float((predicted == labels).mean()),
        loss=float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
        count=len(labels),
        per_digit=per_digit,
        confusion=confusion.tolist(),
        mistakes=[
            Mistake(int(i), int(labels[i]), int(predicted[i]), float(probabilities[i].max()))
            for i in wrong
        ],
        profile=PredictionProfile.from_probabilities(probabilities),
    )


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> Evaluation:
    """Evaluate a Keras model on uint8 MNIST-style images."""
    probabilities = model.predict(model_input(images), batch_size=batch_size, verbose=0)
    return metrics_from_probabilities(probabilities, labels)
