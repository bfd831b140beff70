"""Production's view of a span's labels, before they train anything (`digitflow data add`).

- agreement: the share of the labels that production predicts, overall and per digit;
- suspects: images whose label production contradicts with high confidence: it gives the label
  less than SUSPECT_LABEL and one other digit more than SUSPECT_OTHER (confident learning's
  clearest cases: most are label mistakes, a few are production's);
- a span whose agreement is under MIN_AGREEMENT (half) of production's recorded accuracy (its
  `metrics.accuracy`, MNIST test for the nightly's models; 100% when it has none) is refused
  unless the person accepts it: labels shifted by one, a wrong column, another job's file.
  Scans unlike MNIST cost a model some points, not half of them; a weak production model
  (75% on MNIST) still checks a span (refused under 37.5%), a useless one checks nothing.

TensorFlow is imported only when the store has a production model to load.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from model_store.refs import label
from model_store.store import ModelStore

ALIAS = "production"
MIN_AGREEMENT = 0.5
SUSPECT_LABEL, SUSPECT_OTHER = 0.05, 0.95


@dataclass(frozen=True)
class Suspect:
    """An image production contradicts: its index in the span, label, and production's digit
    with its probability."""

    index: int
    label: int
    predicted: int
    confidence: float


@dataclass(frozen=True)
class LabelCheck:
    """How far `model` agrees with a span's labels, and the images it contradicts."""

    model: str  # `production v3`
    accuracy: float  # the model's recorded accuracy, what agreement is held against
    agreed: int
    count: int
    per_digit: dict[str, float | None]  # "0".."9" -> share agreed; None: no such label
    suspects: list[Suspect]

    @property
    def agreement(self) -> float:
        return self.agreed / self.count

    @property
    def refusal(self) -> str | None:
        """Why the span needs the person's explicit acceptance, in one line; None if not."""
        if self.agreement >= MIN_AGREEMENT * self.accuracy:
            return None
        return (
            f"{self.model} agrees with only {self.agreement:.1%} of the labels, under half its "
            f"accuracy ({self.accuracy:.1%}): check them, or pass --accept-disagreement"
        )

    def summary(self) -> str:
        """One line: overall agreement, then per digit in percent (`-`: no such label)."""
        digits = " ".join("-" if v is None else f"{v:.0%}" for v in self.per_digit.values())
        return (
            f"{self.model} agrees with {self.agreed} of {self.count} labels "
            f"({self.agreement:.1%}); per digit 0-9: {digits}"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "agreement": self.agreement}


def check_labels(
    probabilities: np.ndarray, labels: np.ndarray, model: str, accuracy: float = 1.0
) -> LabelCheck:
    """`model`'s agreement with `labels`, from its probabilities (n, 10), and its suspects;
    `accuracy`: the model's recorded accuracy."""
    labels = labels.astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    agrees = predicted == labels
    per_digit = {
        str(digit): float(agrees[labels == digit].mean()) if (labels == digit).any() else None
        for digit in range(10)
    }
    given = probabilities[np.arange(len(labels)), labels]
    confident = probabilities.max(axis=1)
    suspects = [
        Suspect(int(i), int(labels[i]), int(predicted[i]), float(confident[i]))
        for i in np.flatnonzero((given < SUSPECT_LABEL) & (confident > SUSPECT_OTHER))
    ]
    return LabelCheck(model, accuracy, int(agrees.sum()), len(labels), per_digit, suspects)


def check_with_production(
    store: str | os.PathLike[str] | None, images: np.ndarray, labels: np.ndarray
) -> LabelCheck | None:
    """The store's production model on uint8 MNIST-style `images`; None when there is none."""
    models = ModelStore(store)
    version = models.aliases().get(ALIAS)
    if version is None:
        return None
    from digitflow.data import model_input

    recorded = models.get(version).card.metrics.accuracy  # checked in [0, 1] by the card
    probabilities = models.load_model(version).predict(model_input(images), verbose=0)
    model = f"{ALIAS} {label(version)}"
    return check_labels(probabilities, labels, model, recorded or 1.0)
