"""Models, training and evaluation on real MNIST with real saved Keras files."""

from __future__ import annotations

import numpy as np
import pytest

from digitflow import models, profiles
from digitflow.data import model_input
from digitflow.evaluate import PredictionProfile, evaluate, metrics_from_probabilities
from digitflow.train import train


def test_every_profile_architecture_builds_a_model_of_ten_classes():
    for name in profiles.ARCHITECTURES:
        model = models.build_model(name)
        assert model.output_shape == (None, 10), name


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        profiles.train_config("fast", architecture="resnet")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        profiles.train_config("huge")
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; choose from cnn, "):
        models.build_model("resnet")


def test_training_is_seeded_and_reproducible(mnist):
    small = mnist.subset(train=2_000, test=500)
    settings = profiles.train_config("fast", architecture="mlp", epochs=1, seed=7)
    first = train(small, settings, verbose=0)
    second = train(small, settings, verbose=0)
    assert first.history["loss"] == pytest.approx(second.history["loss"], rel=1e-5)
    assert first.validation_size == 200 and first.train_size == 1_800


def test_saved_model_round_trip_gives_identical_predictions(trained_model_path, mnist):
    model = models.load_model(trained_model_path)
    again = models.load_model(trained_model_path)
    x = model_input(mnist.x_test[:64])
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_evaluation_of_a_trained_model(trained_model_path, mnist):
    evaluation = evaluate(models.load_model(trained_model_path), mnist.x_test, mnist.y_test)

    assert evaluation.count == 10_000
    assert evaluation.accuracy > 0.9  # one short epoch on 12k images; chance is 0.1
    assert sum(map(sum, evaluation.confusion)) == 10_000
    assert len(evaluation.mistakes) == round((1 - evaluation.accuracy) * 10_000)
    assert all(m.label != m.predicted for m in evaluation.mistakes)
    assert [m.support for m in evaluation.per_digit] == np.bincount(mnist.y_test).tolist()


def test_metrics_from_known_probabilities():
    labels = np.array([0, 0, 1, 2])
    probabilities = np.eye(10)[[0, 1, 1, 2]] * 0.9 + 0.01
    evaluation = metrics_from_probabilities(probabilities, labels)

    assert evaluation.accuracy == 0.75
    assert evaluation.per_digit[0].recall == 0.5 and evaluation.per_digit[0].precision == 1.0
    assert evaluation.per_digit[1].precision == 0.5 and evaluation.per_digit[1].recall == 1.0
    assert evaluation.confusion[0][1] == 1
    assert [(m.index, m.label, m.predicted) for m in evaluation.mistakes] == [(1, 0, 1)]
    assert evaluation.loss == pytest.approx(-np.log([0.91, 0.01, 0.91, 0.91]).mean())
    profile = evaluation.profile  # what the model predicts, labels aside: the drift reference
    assert profile.digit_share == [0.25, 0.5, 0.25] + [0.0] * 7
    assert (profile.mean_confidence, profile.low_confidence_rate, profile.count) == (
        pytest.approx(0.91),
        0.0,
        4,
    )
    assert PredictionProfile.from_dict(profile.to_dict()) == profile


def test_augmentation_lives_in_the_input_pipeline_not_in_the_saved_model(mnist):
    from digitflow.train import dataset

    images, labels = mnist.x_train[:64], mnist.y_train[:64]
    plain = next(iter(dataset(images, labels, 64, seed=None)))
    augmented = next(iter(dataset(images, labels, 64, seed=None, augment=True)))
    assert augmented[0].shape == plain[0].shape == (64, 28, 28)
    np.testing.assert_array_equal(augmented[1], plain[1])
    np.testing.assert_allclose(plain[0], images / 255.0, rtol=1e-6)
    moved = np.abs(augmented[0].numpy() - plain[0].numpy()).mean(axis=(1, 2)) > 0.01
    assert moved.mean() > 0.9  # nearly every digit turned, shifted or zoomed
    layer_names = [layer.name for layer in models.build_model("cnn").layers]
    assert not any("random" in name or "augmentation" in name for name in layer_names)
