"""Evaluation on a labelled set: accuracy, loss, per-digit metrics, confusion matrix, mistakes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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
class Evaluation:
    """What a model got right and wrong on `count` labelled images."""

    accuracy: float
    loss: float
    count: int
    per_digit: list[DigitMetrics]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit
    mistakes: list[Mistake]

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
    )


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> Evaluation:
    """Evaluate a Keras model on uint8 MNIST-style images."""
    probabilities = model.predict(model_input(images), batch_size=batch_size, verbose=0)
    return metrics_from_probabilities(probabilities, labels)
