"""Drift: do a bulk run's predictions look like the model's own when it was registered?

The reference is the `PredictionProfile` recorded in the model's card at registration
(`ModelCard.reference`: the share of each predicted digit, the mean confidence and the
low-confidence rate on the test images). A run is compared with it on two things:

- the mix of predicted digits, by the population stability index,
  PSI = sum over digits of (run - reference) * ln(run / reference), each share floored at
  EPSILON so that an empty class counts without a division by zero (above 0.25 is the usual
  sign of a real shift);
- the low-confidence rate, as a multiple of the reference's, that rate floored at RATE_FLOOR
  (a model that was almost never unsure would make any doubt look like drift).

For an unchanged mix PSI is about 9 / n from sampling alone, so runs of fewer than
`min_images` classified images are not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from digitflow.evaluate import PredictionProfile
from model_store.card import InvalidCard, ModelCard

EPSILON = 1e-4
RATE_FLOOR = 0.01
NO_DRIFT = "no drift"
NO_REFERENCE = "drift: not checked (the model has no reference profile)"


@dataclass(frozen=True)
class Drift:
    """The verdict on one run, with the figures behind it (None where not checked)."""

    verdict: str  # `no drift`, `drift: ...`, or `drift: not checked (...)`
    run: PredictionProfile
    reference: PredictionProfile | None = None
    psi: float | None = None
    low_confidence_ratio: float | None = None

    @property
    def detected(self) -> bool:
        return self.psi is not None and self.verdict != NO_DRIFT

    def line(self) -> str:
        """The verdict and, when checked, the figures: one line of the run's summary."""
        if self.psi is None or self.reference is None:
            return self.verdict
        rates = f"{self.run.low_confidence_rate:.0%} vs {self.reference.low_confidence_rate:.0%}"
        return f"{self.verdict} (PSI {self.psi:.2f}; low-confidence {rates} in training)"


def reference_profile(card: ModelCard | Mapping[str, Any]) -> PredictionProfile | None:
    """The model's reference profile, from its card (or metadata, read as a card); None when
    it has none (a .keras file, an old version) or the metadata is not a valid card."""
    if not isinstance(card, ModelCard):
        try:
            card = ModelCard.from_dict(card)
        except InvalidCard:
            return None
    return card.reference_profile()


def psi(actual: Sequence[float], expected: Sequence[float]) -> float:
    """Population stability index of two distributions over the same classes."""
    pairs = ((max(a, EPSILON), max(e, EPSILON)) for a, e in zip(actual, expected, strict=True))
    return sum((a - e) * math.log(a / e) for a, e in pairs)


def compare(
    run: PredictionProfile,
    reference: PredictionProfile | None,
    *,
    max_psi: float,
    max_low_confidence_ratio: float,
    min_images: int,
) -> Drift:
    """The drift verdict of a run's profile against the model's reference."""
    if reference is None:
        return Drift(NO_REFERENCE, run)
    if run.count < min_images:
        why = f"only {run.count:,} images classified, fewer than {min_images:,}"
        return Drift(f"drift: not checked ({why})", run, reference)
    index = psi(run.digit_share, reference.digit_share)
    ratio = run.low_confidence_rate / max(reference.low_confidence_rate, RATE_FLOOR)
    findings = []
    if index > max_psi:
        findings.append(_largest_shift(run, reference))
    if ratio > max_low_confidence_ratio:
        findings.append(f"low-confidence {ratio:.1f}x")
    verdict = f"drift: {'; '.join(findings)}" if findings else NO_DRIFT
    return Drift(verdict, run, reference, index, ratio)


def _largest_shift(run: PredictionProfile, reference: PredictionProfile) -> str:
    """The digit whose share moved most, e.g. `digit 1 at 31% vs 11% in training`."""
    shares = list(zip(run.digit_share, reference.digit_share, strict=True))
    digit = max(range(len(shares)), key=lambda d: abs(shares[d][0] - shares[d][1]))
    now, then = shares[digit]
    return f"digit {digit} at {now:.0%} vs {then:.0%} in training"
