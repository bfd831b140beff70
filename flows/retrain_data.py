"""What a retrain run loads: verified MNIST, the store's active labelled spans, and the
real-scan robustness suite; and MNIST with the spans' train images, which the candidate learns
from."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from digitflow import robustness
from digitflow.data import Mnist
from flows.artifacts import spans_text
from model_store.spans.records import LabelledImages
from model_store.spans.store import SpanStore


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,
)
def load_data(train_limit: int | None, test_limit: int | None) -> Mnist:
    """Verified MNIST (cache, then the network sources), cut to the limits if given."""
    from digitflow.data import load_mnist

    data = load_mnist()
    if train_limit is None and test_limit is None:
        return data
    return data.subset(train=train_limit, test=test_limit)


@task(cache_policy=NO_CACHE)
def load_robustness_suite(count: int | None) -> robustness.Suite:
    """The real-scan robustness suite of `count` images (None: its full size), rendered from
    all of MNIST's test digits whatever the run's limits: built once, then from the cache."""
    from digitflow.data import load_mnist

    size = robustness.DEFAULT_COUNT if count is None else count
    suite = robustness.load_suite(load_mnist(), size)
    styles = len(set(suite.styles.tolist()))
    get_run_logger().info("robustness suite: %d images in %d styles", len(suite), styles)
    return suite


@task(cache_policy=NO_CACHE)
def load_spans(store: str | None) -> LabelledImages:
    """The accepted labelled spans in the store: their train images and pooled holdout."""
    images = SpanStore(store).active_images()
    logger = get_run_logger()
    for warning in images.warnings:  # overruled labels, torn spans skipped
        logger.warning("%s", warning)
    logger.info(
        "%s: %d train, %d holdout images",
        spans_text(images.spans),
        len(images.y_train),
        len(images.y_holdout),
    )
    return images


def with_spans(mnist: Mnist, spans: LabelledImages) -> Mnist:
    """MNIST with the spans' train images after its own; its checksum covers the spans'."""
    if spans.empty:
        return mnist
    return replace(
        mnist,
        x_train=np.concatenate([mnist.x_train, spans.x_train]),
        y_train=np.concatenate([mnist.y_train, spans.y_train]),
        source=f"{mnist.source} + {spans_text(spans.spans)}",
        checksum=f"{mnist.checksum}+spans:{spans.checksum}",
    )
