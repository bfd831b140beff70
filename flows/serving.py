"""What serves under the run's alias, and the baseline the gate's regression rules compare with.

The store is read once (`look_up`): the version the alias points to (production), the spans it
was trained on that are retired now, and the version with the run's identity. The baseline is
production, unless production was trained on a span since retired: then it is the best model
trained on active data only that has served under the alias (none: the floors alone), and
every reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.candidate import Candidate
from flows.gate import Baseline, Scores
from flows.scoring import Evidence, score, scores_line
from model_store import ModelStore
from model_store.card import ModelCard
from model_store.refs import label

NO_ACTIVE_BASELINE = "no model trained on active data only has served"


@dataclass(frozen=True)
class Serving:
    """What the store holds for this run, read once: the version `alias` points to
    (`production`), the spans it was trained on that are retired now, the version the
    regression rules compare with (`baseline`), and the version with the run's identity (`same`;
    None when there is none or the run is forced)."""

    production: int | None
    retired: tuple[str, ...]
    baseline: int | None
    same: int | None

    @property
    def serves_already(self) -> bool:
        """The version with the run's identity is the one `alias` points to."""
        return self.same is not None and self.same == self.production


def same_identity(cards: dict[int, ModelCard], identity: str, production: int | None) -> int | None:
    """The version trained on the same data, config and code: production if it is one, else
    the newest."""
    matching = [number for number, card in cards.items() if card.identity == identity]
    return production if production in matching else max(matching, default=None)


def best_on_active_data(
    cards: dict[int, ModelCard], served: set[int], active: tuple[str, ...]
) -> int | None:
    """Of the versions that have served, the most accurate (as recorded) of those trained on
    active spans only (or none: MNIST alone)."""
    eligible = [
        (card.metrics.accuracy or 0.0, number)
        for number, card in cards.items()
        if number in served and set(card.span_names) <= set(active)
    ]
    return max(eligible, default=(None, None))[1]


@task(cache_policy=NO_CACHE)
def look_up(
    store: str | None, alias: str, identity: str | None, active: tuple[str, ...]
) -> Serving:
    """What serves under `alias`, whether it was trained on retired spans, what the regression
    rules compare with, and the version with `identity` (None: look for none)."""
    models = ModelStore(store)
    cards = {version.version: version.card for version in models.list_versions()}
    production = models.aliases().get(alias)
    card = cards.get(production)
    retired = () if card is None else tuple(n for n in card.span_names if n not in active)
    baseline = production
    if retired:
        served = {entry.to_version for entry in models.history(alias)}
        baseline = best_on_active_data(cards, served, active)
        get_run_logger().warning(retired_line(alias, production, retired))
    same = None if identity is None else same_identity(cards, identity, production)
    return Serving(production, retired, baseline, same)


def retired_line(alias: str, production: int | None, retired: tuple[str, ...]) -> str:
    """`production v3 was trained on retired span S`."""
    spans = f"span {retired[0]}" if len(retired) == 1 else f"spans {', '.join(retired)}"
    return f"{alias} {label(production)} was trained on retired {spans}"


def _comparison(alias: str, serving: Serving) -> tuple[str, str | None]:
    """How the reasons name the baseline, and the rule that chose it when it is not production."""
    if not serving.retired:
        return alias, None
    retired = retired_line(alias, serving.production, serving.retired)
    if serving.baseline is None:
        return alias, retired
    name = label(serving.baseline)
    return name, f"{retired}; compared with {name}, the best model trained on active data only"


@task(cache_policy=NO_CACHE)
def evaluate_baseline(
    store: str | None,
    alias: str,
    serving: Serving,
    evidence: Evidence,
    candidate: Candidate,
    scores: Scores,
) -> Baseline | None:
    """The baseline on the same images (None: `alias` has no model): production, or, when it
    was trained on retired spans, the best model trained on active data only that has served
    (none: the floors alone). A model that no longer loads must not block the nightly."""
    logger, (name, rule) = get_run_logger(), _comparison(alias, serving)
    version = serving.baseline
    if serving.production is None:
        logger.info("no %s model yet", alias)
        return None
    if version is None:
        return Baseline(name, None, None, NO_ACTIVE_BASELINE, rule)
    if candidate.registered is not None and candidate.registered.version == version:
        return Baseline(name, version, scores, rule=rule)  # the same model: the same scores
    what = f"{alias} {label(version)}" if name == alias else name
    try:
        theirs = score(ModelStore(store).load_model(version), evidence)
    except Exception as error:  # whatever broke it, the candidate is judged on the floors
        problem = f"{what} cannot be evaluated: {_one_line(error)}"
        logger.warning(problem)
        return Baseline(name, version, None, problem, rule)
    logger.info("%s: %s", what, scores_line(theirs))
    return Baseline(name, version, theirs, rule=rule)


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
