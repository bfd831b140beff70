"""The retrain option set, and `flat`: any option set as the flat parameters of a command or flow.

Option sets are frozen dataclasses whose fields are declared with `digitflow.options.option`
(name, type, default, help, bounds). `flat(Options)` turns a function that takes
`options: Options` into one whose parameters are the fields themselves, by giving it a generated
`__signature__`, which is what both consumers read:

- Prefect (`inspect.signature`): the flow's parameters, their validation, and the parameter
  schema of deployments (`flow.serve`, `prefect deploy`): flat, `{"min_accuracy": 0.98}`, with
  the fields' help as their descriptions;
- typer, with `cli=True`: each field as `Annotated[type, typer.Option(...)]`.

The function body receives one `Options` instance. Flows keep flat parameters, as deployments
and `prefect.yaml` pass them, and they are generated rather than written out with defaults taken
from the dataclass: adding an option to `digitflow retrain`, `digitflow schedule`, the `retrain`
flow and its deployments is adding one field to `RetrainOptions`, and nothing else (the gate's
thresholds are declared once, in `flows.gate.Thresholds`, and taken from there). The same holds
for `ClassifyOptions` (in `beam_jobs.options`, the layer below, whose job reads it too). Cheap
to import: no Prefect, no TensorFlow.
"""

from __future__ import annotations

import functools
import inspect
import secrets
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, fields
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from typer.models import ParameterInfo

from beam_jobs.options import STORE_HELP
from digitflow.options import option, same_as, spec
from digitflow.profiles import TrainConfig, train_config
from flows.gate import Thresholds

R = TypeVar("R")


@dataclass(frozen=True)
class RetrainOptions:
    """One retrain run: what to train (a profile, some overrides), the gate, the store."""

    profile: str = option("full", help="Training profile: fast or full (the nightly one).")
    architecture: str | None = option(
        None, help="Architecture (default: the profile's, cnn).", cli=("--arch",)
    )
    epochs: int | None = option(None, help="Override the profile's epochs.", min=1)
    seed: int | None = option(None, help="Override the profile's seed.")
    min_accuracy: float = same_as(Thresholds, "min_accuracy")
    max_regression: float = same_as(Thresholds, "max_regression")
    min_digit_recall: float = same_as(Thresholds, "min_digit_recall")
    min_holdout: int = same_as(Thresholds, "min_holdout")
    holdout_tolerance: float = same_as(Thresholds, "holdout_tolerance")
    robustness_tolerance: float = same_as(Thresholds, "robustness_tolerance")
    robustness_images: int | None = option(
        None,
        help="Images in the real-scan robustness suite, spread over its styles (default: the "
        "suite's full size).",
        min=1,
    )
    store: str | None = option(None, help=STORE_HELP, metavar="URI")
    alias: str = option("production", help="The alias a passing candidate is promoted to.")
    train_limit: int | None = option(
        None, help="Train on the first N images only (quick trials).", min=1
    )
    test_limit: int | None = option(None, help="Evaluate on the first N test images only.", min=1)
    force: bool = option(
        False,
        help="Train and register even when a version was trained on the same data and config, "
        "with a new random seed (unless --seed is given).",
    )

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(**{item.name: getattr(self, item.name) for item in fields(Thresholds)})

    def training_config(self) -> TrainConfig:
        """The profile with the overrides, a random seed when forced without one; ValueError
        for an unknown profile or architecture."""
        seed = secrets.randbelow(2**32) if self.force and self.seed is None else self.seed
        return train_config(self.profile, self.architecture, self.epochs, seed)

    def parameters(self) -> dict[str, Any]:
        """The flow parameters these options set (None: the flow's own default)."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def flat(options: type, *, cli: bool = False) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Replace the decorated function's parameter `options` by the fields of `options`.

    The wrapper takes the fields (positionally or by name, defaults filled in) and calls the
    function with `options=Options(...)` and its other parameters as given.
    """
    hints = get_type_hints(options)

    def parameter(item: Field, kind: Any) -> inspect.Parameter:
        hint = hints[item.name]
        annotation = Annotated[hint, _typer_info(item, hints)] if cli else hint
        default = inspect.Parameter.empty if item.default is MISSING else item.default
        return inspect.Parameter(item.name, kind, default=default, annotation=annotation)

    def decorate(fn: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(fn, eval_str=True)
        own = list(signature.parameters.values())
        at = [p.name for p in own].index("options")
        generated = [parameter(item, own[at].kind) for item in fields(options)]
        signature = signature.replace(parameters=[*own[:at], *generated, *own[at + 1 :]])

        @functools.wraps(fn)
        def with_flat_parameters(*args: Any, **kwargs: Any) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            chosen = options(**{item.name: given.pop(item.name) for item in fields(options)})
            return fn(**given, options=chosen)

        with_flat_parameters.__signature__ = signature  # type: ignore[attr-defined]
        if not cli:  # Prefect reads parameter descriptions from a Google-style docstring
            described = "\n".join(f"    {item.name}: {spec(item).help}" for item in fields(options))
            with_flat_parameters.__doc__ = f"{inspect.getdoc(fn) or ''}\n\nArgs:\n{described}"
        return with_flat_parameters

    return decorate


def _typer_info(item: Field, hints: dict[str, Any]) -> ParameterInfo:
    """The typer argument or option of a field."""
    about = spec(item)
    if about.argument:
        return typer.Argument(metavar=about.metavar, help=about.help)
    names = about.cli
    if not names and hints[item.name] is bool:  # a flag alone, no --no-flag
        names = (f"--{item.name.replace('_', '-')}",)
    return typer.Option(
        *names,
        metavar=about.metavar,
        help=about.help,
        min=about.min,
        max=about.max,
        show_default=item.default is not None,
    )
