"""The three defenses that do not work: naive PGD overrates each, a check flags it, and the
adaptive attack's robust accuracy is at least 20 points lower."""

import pytest

from advlab.data import load_dataset
from advlab.evaluate.adaptive import detection_study, quantisation_study, randomisation_study

EPS = 0.2


@pytest.fixture(scope="module")
def data():
    d = load_dataset("digits")
    return d.x_test[:150], d.y_test[:150], d.bounds


def assert_broken(row, flag):
    assert flag in row["flags"], row
    assert row["naive_robust_accuracy"] - row["adaptive_robust_accuracy"] >= 0.20, row


def test_quantisation_falls_to_bpda(data, digits_cnn):
    x, y, bounds = data
    assert_broken(quantisation_study(digits_cnn, x, y, EPS, bounds), "gradients")


def test_randomisation_falls_to_eot(data, trained_digits):
    x, y, bounds = data
    model = trained_digits("cnn-small", epochs=15, resize_pad=0.75)  # trained under the defense's randomness
    assert_broken(randomisation_study(model, x, y, EPS, bounds), "randomness")


def test_detector_falls_to_high_confidence(data, digits_cnn):
    x, y, bounds = data
    assert_broken(detection_study(digits_cnn, x, y, EPS, bounds), "detector")


def test_no_flags_on_an_undefended_model(data, digits_cnn):
    from advlab.evaluate.checks import check_detector, check_gradients, check_randomness
    from advlab.models import ConfidenceDetector
    x, y, bounds = data
    model = digits_cnn
    assert check_gradients(model, x, y).passed and check_randomness(model, x).passed
    # A detector that accepts everything (threshold ~0) rejects nothing: no flag.
    assert check_detector(ConfidenceDetector(model, 1e-6), x, y, eps=EPS, bounds=bounds).passed
