"""The robustness suite: real renderings of MNIST test digits in every style, deterministic,
cached and checked; and a real model's score on it, overall and per style."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitflow import config
from digitflow.data import Mnist, model_input
from digitflow.models import build_model, load_model
from digitflow.preprocess import to_mnist
from digitflow.robustness import (
    RECIPE_VERSION,
    STYLES,
    RobustnessScore,
    Suite,
    load_suite,
    score,
)

PER_STYLE = 30
SMALL = 2 * len(STYLES)  # for the cache tests: two images per style


@pytest.fixture(autouse=True)
def own_data_dir(digitflow_home: Path) -> Path:
    """A data directory of the test's own, so no suite built here lands in the shared cache."""
    data = digitflow_home / "data"
    data.unlink()
    data.mkdir()
    return data


@pytest.fixture(scope="module")
def suite(mnist: Mnist, tmp_path_factory: pytest.TempPathFactory) -> Suite:
    """PER_STYLE images of every style, built once for the module in a home of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITFLOW_HOME", str(tmp_path_factory.mktemp("suite-home")))
        return load_suite(mnist, count=PER_STYLE * len(STYLES))


@pytest.fixture(scope="module")
def model(mnist: Mnist, tmp_path_factory: pytest.TempPathFactory):
    """An MLP trained for two epochs on 12,000 MNIST digits (about 2 s), saved and loaded back."""
    import keras

    keras.utils.set_random_seed(0)
    trained = build_model("mlp")
    trained.compile("adam", "sparse_categorical_crossentropy")
    trained.fit(model_input(mnist.x_train[:12_000]), mnist.y_train[:12_000], epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("mlp") / "mlp.keras"
    trained.save(path)
    return load_model(path)


def test_every_style_renders_the_same_digits_and_to_mnist_takes_them_all(suite: Suite):
    assert suite.images.shape == (PER_STYLE * len(STYLES), 28, 28)
    assert suite.images.dtype == np.float32 and suite.labels.dtype == np.uint8
    assert suite.images.min() >= 0.0 and suite.images.max() <= 1.0
    # valid by construction: no rendering was rejected (a rejected one would be all 0)
    assert suite.images.max(axis=(1, 2)).min() > 0.5
    names, counts = np.unique(suite.styles, return_counts=True)
    assert set(names) == set(STYLES) and set(counts) == {PER_STYLE}
    digits = {style: suite.indices[suite.styles == style].tolist() for style in STYLES}
    assert all(rows == digits["png"] for rows in digits.values())
    assert len(set(digits["png"])) == PER_STYLE


def test_the_suite_is_made_of_test_digits_decoded_by_to_mnist(suite: Suite, mnist: Mnist):
    assert np.array_equal(suite.labels, mnist.y_test[suite.indices])
    for row in np.flatnonzero(suite.styles == "mnist-form")[:5]:
        png = io.BytesIO()
        Image.fromarray(mnist.x_test[suite.indices[row]]).save(png, "PNG")
        assert np.array_equal(suite.images[row], to_mnist(png.getvalue()))


def test_a_count_that_does_not_divide_spreads_within_one_image(mnist: Mnist):
    built = load_suite(mnist, count=SMALL + 5)
    counts = [np.sum(built.styles == style) for style in STYLES]
    assert len(built) == SMALL + 5 and max(counts) - min(counts) == 1


def test_too_few_images_for_every_style_is_refused(mnist: Mnist):
    with pytest.raises(ValueError, match="one image per style"):
        load_suite(mnist, count=len(STYLES) - 1)


def test_builds_are_identical_and_the_checksum_covers_images_and_labels(
    mnist: Mnist, own_data_dir: Path
):
    first = load_suite(mnist, count=SMALL)
    (own_data_dir / f"robustness-{RECIPE_VERSION}-{SMALL}.npz").unlink()
    second = load_suite(mnist, count=SMALL)
    assert second.checksum == first.checksum
    assert np.array_equal(second.images, first.images)
    assert list(second.styles) == list(first.styles)
    digest = hashlib.sha256(first.images.tobytes() + first.labels.tobytes()).hexdigest()
    assert first.checksum == digest


def test_the_cache_is_reused(mnist: Mnist):
    first = load_suite(mnist, count=SMALL)
    cache = config.data_dir() / f"robustness-{RECIPE_VERSION}-{SMALL}.npz"
    written = cache.stat()
    again = load_suite(mnist, count=SMALL)
    assert again.checksum == first.checksum
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_a_torn_or_tampered_cache_is_rebuilt_and_each_count_has_its_own(
    mnist: Mnist, own_data_dir: Path
):
    cache = own_data_dir / f"robustness-{RECIPE_VERSION}-{SMALL}.npz"
    built = load_suite(mnist, count=SMALL)
    intact = cache.read_bytes()

    cache.write_bytes(intact[: len(intact) // 2])  # torn
    assert load_suite(mnist, count=SMALL).checksum == built.checksum
    assert cache.read_bytes() == intact

    with np.load(cache) as npz:
        arrays = dict(npz)
    arrays["images"][0, 14, 14] = 1.0 - arrays["images"][0, 14, 14]  # tampered
    np.savez(cache, **arrays)
    assert load_suite(mnist, count=SMALL).checksum == built.checksum
    assert cache.read_bytes() == intact

    larger = load_suite(mnist, count=SMALL + len(STYLES))  # another count, another file
    assert len(larger) == SMALL + len(STYLES) and cache.read_bytes() == intact
    assert (own_data_dir / f"robustness-{RECIPE_VERSION}-{len(larger)}.npz").exists()


def test_score_matches_a_plain_loop_and_its_styles_average_to_the_whole(model, suite: Suite):
    result = score(model, suite)
    assert (result.count, result.suite) == (len(suite), suite.checksum)
    assert list(result.per_style) == list(STYLES)
    for style in STYLES:
        rows = suite.styles == style
        predicted = model.predict(suite.images[rows], verbose=0).argmax(axis=1)
        assert result.per_style[style] == pytest.approx(np.mean(predicted == suite.labels[rows]))
    assert result.accuracy == pytest.approx(np.mean(list(result.per_style.values())))
    assert 0.8 < result.accuracy < 1.0


def test_per_style_figures_weigh_by_count_when_styles_differ_in_size(model, mnist: Mnist):
    built = load_suite(mnist, count=SMALL + 5)
    result = score(model, built)
    weights = [np.sum(built.styles == style) for style in result.per_style]
    overall = np.average(list(result.per_style.values()), weights=weights)
    assert result.accuracy == pytest.approx(overall)


class InBatches:
    """Anything with `predict(images) -> (n, 10)`, here a Keras model; records batch sizes."""

    def __init__(self, model) -> None:
        self.model = model
        self.batches: list[int] = []

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        return self.model.predict(images, verbose=0)


def test_any_predictor_is_scored_batch_by_batch(model, suite: Suite):
    predictor = InBatches(model)
    assert score(predictor, suite, batch_size=100) == score(model, suite)
    assert max(predictor.batches) == 100 and sum(predictor.batches) == len(suite)


def test_an_untrained_model_scores_near_chance(model_file: Path, suite: Suite):
    assert score(load_model(model_file), suite).accuracy < 0.3


class BlindToFaintStrokes(InBatches):
    """A damaged model: wrong wherever under 12% of a digit's ink is solid (as thin strokes
    come out of `to_mnist`: hairlines widened into grey)."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        probabilities = super().predict(images)
        solid = (images >= 0.9).sum(axis=(1, 2)) / (images > 0.1).sum(axis=(1, 2))
        faint = solid < 0.12
        probabilities[faint] = np.roll(probabilities[faint], 1, axis=1)
        return probabilities


def test_a_damaged_model_loses_most_on_the_style_it_cannot_read(model, suite: Suite):
    healthy, damaged = score(model, suite), score(BlindToFaintStrokes(model), suite)
    loss = {style: healthy.per_style[style] - damaged.per_style[style] for style in STYLES}
    assert max(loss, key=loss.__getitem__) == "thin-pen"
    assert loss["thin-pen"] > 3 * (healthy.accuracy - damaged.accuracy)


def test_an_image_to_mnist_rejected_counts_as_wrong(model):
    images = np.zeros((2, 28, 28), np.float32)
    images[1, 10:18, 13:15] = 1.0  # a "1"
    labels = model.predict(images, verbose=0).argmax(axis=1).astype(np.uint8)
    blank = Suite(images, labels, np.array(["png", "png"]), np.array([0, 1]), "x")
    assert score(model, blank).accuracy == 0.5


def test_a_score_round_trips_through_a_dict_and_refuses_a_bad_one(model, suite: Suite):
    result = score(model, suite)
    assert RobustnessScore.from_dict(result.to_dict()) == result
    record = result.to_dict()
    for name in ("accuracy", "per_style", "count", "suite"):
        with pytest.raises(ValueError, match=f"lacks {name}"):
            RobustnessScore.from_dict({k: v for k, v in record.items() if k != name})
    for bad in (
        {"accuracy": 7},
        {"accuracy": "0.9"},
        {"per_style": {"png": [0.9]}},
        {"per_style": [0.9]},
        {"count": -1},
        {"count": True},
        {"suite": None},
    ):
        with pytest.raises(ValueError, match="robustness"):
            RobustnessScore.from_dict({**record, **bad})
    with pytest.raises(ValueError, match="mapping"):
        RobustnessScore.from_dict([0.9])  # type: ignore[arg-type]
