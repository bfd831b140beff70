"""The `retrain` flow: train a candidate, evaluate it next to production, gate, promote, report.

The candidate learns from MNIST plus the train images of the store's active labelled spans
(people's own scans), and is judged on MNIST's test set and on the spans' pooled holdout. Every
task is small and does one thing; the flow composes them. Production changes only in `promote`,
by compare-and-swap against the version the run saw, so a crash anywhere, or a rejected
candidate, leaves it untouched. A rejected candidate stays registered.

Every run decides from what serves now:

- a registered version with the run's `identity` (its data, training config and code) is not
  retrained, unless forced: it is the candidate, judged again under today's thresholds. If it
  is what the alias points to and it passes, the run is `Unchanged`; otherwise it is promoted
  or not, like a new candidate. An alias with no model is never `Unchanged`.
- when the alias's model was trained on a span since retired, the regression rules compare the
  candidate with the best model trained on active data only that has served under the alias
  (none: the floors alone), and every reason says so.

The run ends in a Completed-type state named `Promoted`, `Not promoted` or `Unchanged` (so they
look different in the UI and automations can react to each), or Failed.

The steps live beside it: `retrain_data` (what the run loads), `candidate` (trained, cached or
judged again), `scoring`, `serving` (what serves, the baseline), `gate`, `registration`,
`promotion` and `retrain_report` (the report and the final state).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from flows.candidate import judged, run_identity
from flows.gate import decide
from flows.options import RetrainOptions, flat
from flows.promotion import promote_if_passed
from flows.registration import candidate_card, register_candidate
from flows.retrain_data import load_data, load_robustness_suite, load_spans, with_spans
from flows.retrain_report import final_state, publish_report, render_report_image, unchanged
from flows.scoring import Evidence, evaluate_candidate
from flows.serving import evaluate_baseline, look_up
from model_store import ModelStore
from model_store.refs import label


@task(cache_policy=NO_CACHE)
def check_store(store: str | None) -> None:
    """Fail before any training when the store cannot take a new version."""
    ModelStore(store).check_writable()


gate = task(decide, name="gate", cache_policy=NO_CACHE)


@flow(name="retrain", description="Train, evaluate, gate and promote the digit model.")
@flat(RetrainOptions)
def retrain(options: RetrainOptions) -> State:
    """Retrain the model on MNIST and the store's spans; promote it to `alias` if it passes.

    `store` is a path or URI (default: $DIGITFLOW_STORE or $DIGITFLOW_HOME/models), for the
    models and the spans; `train_limit`/`test_limit` cut MNIST only, for quick runs and tests.
    """
    settings = options.training_config()  # an unknown profile fails the run before any work
    check_store(options.store)
    spans = load_spans(options.store)
    data = with_spans(load_data(options.train_limit, options.test_limit), spans)
    evidence = Evidence(data, spans, load_robustness_suite(options.robustness_images))
    identity = run_identity(data, settings)
    looked_for = None if options.force else identity
    serving = look_up(options.store, options.alias, looked_for, spans.spans)
    candidate = judged(options.store, serving.same, data, settings)
    scores = evaluate_candidate(candidate.path, evidence)
    baseline = evaluate_baseline(options.store, options.alias, serving, evidence, candidate, scores)
    decision = gate(scores, baseline, options.thresholds)
    if decision.promote and serving.serves_already:
        return unchanged(options.alias, serving.same, decision)
    registered = candidate.registered
    if candidate.training is not None:
        card = candidate_card(
            options, candidate.training, data, spans, identity, scores, baseline, decision
        )
        registered = register_candidate(options.store, candidate.path, card)
    image = render_report_image(data, scores.test, registered.version)
    # The one step that changes production, last but for publishing what happened.
    promotion = promote_if_passed(options, registered.version, decision, serving.production)
    publish_report(
        options, candidate, spans, registered, scores, baseline, decision, promotion, image
    )
    subject = f"candidate {label(registered.version)}"
    if candidate.training is None:
        subject += " (trained before on the same data and config)"
    return final_state(subject, registered.version, scores.test, promotion, image)
