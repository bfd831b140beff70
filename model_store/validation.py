"""Infra validation: a model file must load and behave like a digit classifier before it serves.

The store runs this before registering a version and before pointing an alias at one, so a file
that would break every bulk run and every nightly comparison (a layer safe mode refuses, the
wrong input or output shape, output that is not probabilities) is refused with one line and
nothing changes. Keras and numpy are imported only when a model is checked.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_store.errors import InvalidModel

if TYPE_CHECKING:
    import numpy as np

CANARY_FILE = "canary_digits.npz"
"""20 MNIST test digits (two of each) as uint8 `images` and `labels`, shipped with the package."""
_TOLERANCE = 1e-3  # on each probability's range and on each row's sum


def validate(path: Path, what: str) -> None:
    """Raise InvalidModel, naming `what`, unless the model at `path` can serve digitflow."""
    from digitflow.models import INPUT_SHAPE, NUM_CLASSES, ModelLoadError, load_model

    try:
        model = load_model(path)
    except ModelLoadError as exc:
        raise InvalidModel(f"{what}: refused: {exc}") from None
    for name, expected in (("input", (None, *INPUT_SHAPE)), ("output", (None, NUM_CLASSES))):
        shape = _shape(model, f"{name}_shape")
        if shape != expected:
            raise InvalidModel(f"{what}: refused: {name} shape is {shape}, expected {expected}")
    images = canary_images()
    try:
        probabilities = model.predict_on_batch(images)
    except Exception as exc:  # whatever a model's own layers raise
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InvalidModel(f"{what}: refused: the canary prediction failed ({reason})") from None
    problem = _probability_problem(probabilities, (len(images), NUM_CLASSES))
    if problem:
        raise InvalidModel(
            f"{what}: refused: on {len(images)} MNIST test digits the model's {problem}"
        )


def canary_images() -> np.ndarray:
    """The shipped canary digits as the models take them: float32 (20, 28, 28) in [0, 1]."""
    import numpy as np

    from digitflow.data import model_input

    with resources.files("model_store").joinpath(CANARY_FILE).open("rb") as fh, np.load(fh) as npz:
        return model_input(npz["images"])


def _shape(model: Any, attribute: str) -> tuple[Any, ...] | None:
    """A model's declared input or output shape; None when it has none (never built)."""
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if isinstance(shape, list | tuple) else None


def _probability_problem(output: Any, shape: tuple[int, int]) -> str | None:
    """What is wrong with a batch of output that should be rows of probabilities, or None."""
    import numpy as np

    values = np.asarray(output, dtype=np.float64)
    if values.shape != shape:
        return f"output has shape {values.shape}, expected {shape}"
    if not np.isfinite(values).all():
        return "output is not finite (NaN or infinity)"
    if values.min() < -_TOLERANCE or values.max() > 1 + _TOLERANCE:
        return f"output is not probabilities (values from {values.min():.3g} to {values.max():.3g})"
    worst = float(np.abs(values.sum(axis=1) - 1).max())
    if worst > _TOLERANCE:
        return f"probabilities do not sum to 1 (off by up to {worst:.3g}; no softmax?)"
    return None
