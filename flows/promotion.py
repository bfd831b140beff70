"""The one step of a retrain run that changes production: promoting a candidate that passed the
gate, by compare-and-swap against the version the run saw. A run that loses the race to another
leaves production to the winner and records that it lost."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.gate import Decision
from flows.options import RetrainOptions
from model_store import ModelStore, PromotionConflict
from model_store.refs import label


@dataclass(frozen=True)
class Promotion:
    """Whether the candidate was promoted, where `alias` points after the run, and why."""

    promoted: bool
    after: int | None
    reason: str


@task(cache_policy=NO_CACHE)
def promote(
    store: str | None, version: int, alias: str, expected: int | None, reason: str, actor: str
) -> int | None:
    """Point `alias` at the candidate, only if it still points where the gate saw it.

    Returns what `alias` points to afterwards: the candidate, or the version of a run that
    promoted first (the candidate's metadata then records that it lost the race).
    """
    models, logger = ModelStore(store), get_run_logger()
    try:
        entry = models.promote(version, alias=alias, expected=expected, reason=reason, actor=actor)
    except PromotionConflict:
        winner = models.aliases().get(alias)
        models.annotate(version, {"promotion": lost_race(winner)})
        logger.warning("%s %s", label(version), lost_race(winner))
        return winner
    logger.info("%s: %s -> %s", alias, label(entry.from_version), label(entry.to_version))
    return entry.to_version


def lost_race(winner: int | None) -> str:
    return f"lost the promotion race to {label(winner)}"


def promote_if_passed(
    options: RetrainOptions, version: int, decision: Decision, expected: int | None
) -> Promotion:
    """Promote a candidate that passed the gate, by compare-and-swap against `expected`, the
    version `alias` pointed to when the run looked."""
    if not decision.promote:
        return Promotion(False, expected, decision.reason)
    actor = f"prefect-flow-run:{flow_run.id}"
    after = promote(options.store, version, options.alias, expected, decision.reason, actor)
    if after != version:
        return Promotion(False, after, f"not promoted: passed the gate but {lost_race(after)}")
    return Promotion(True, after, decision.reason)
