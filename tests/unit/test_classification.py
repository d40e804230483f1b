import xml.etree.ElementTree as ET

import numpy as np
import pytest
from sklearn.datasets import load_digits

from alpha.config import TrainSettings
from alpha.errors import AnnotationError, DataError
from alpha.kinds import classification as clf

LABELS = ["cat", "dog", 'say "hi" & <bye>']


def test_label_config_is_xml_with_every_choice():
    root = ET.fromstring(clf.label_config(LABELS))
    image = root.find("Image")
    choices = root.find("Choices")
    assert image.get("name") == clf.TO_NAME and image.get("value") == f"${clf.DATA_KEY}"
    assert choices.get("name") == clf.FROM_NAME and choices.get("toName") == clf.TO_NAME
    assert choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS


@pytest.mark.parametrize("label", LABELS)
def test_result_round_trip(label):
    assert clf.label_from_result(clf.result_from_label(label), LABELS) == label


def _item(**changes):
    item = clf.result_from_label("cat")[0]
    item.update(changes)
    return item


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ([], "empty result"),
        (clf.result_from_label("horse"), "'horse' is not one of"),
        ([_item(type="rectanglelabels")], "type 'rectanglelabels'"),
        ([_item(value={"choices": ["cat", "dog"]})], "selects 2 labels"),
        ([_item(value={"choices": []})], "selects no label"),
        ([_item(from_name="other")], "no 'label' choices"),
    ],
)
def test_label_from_result_rejects(result, match):
    with pytest.raises(AnnotationError, match=match):
        clf.label_from_result(result, LABELS)


def test_prediction_carries_best_label_and_score():
    pred = clf.prediction(np.array([0.2, 0.7, 0.1]), LABELS, score=0.55, model_version="m1")
    assert pred["model_version"] == "m1" and pred["score"] == 0.55
    assert clf.label_from_result(pred["result"], LABELS) == "dog"
    assert pred["result"][0]["score"] == pytest.approx(0.7)


def test_small_cnn_shapes():
    model = clf.SmallCNN(in_channels=3, num_classes=4, image_size=32, embedding_dim=16)
    probs, emb = clf.predict(model, np.zeros((5, 3, 32, 32), np.float32), temperature=2.0)
    assert probs.shape == (5, 4) and probs.dtype == np.float64
    assert emb.shape == (5, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    probs, emb = clf.predict(model, np.zeros((0, 3, 32, 32), np.float32), temperature=1.0)
    assert probs.shape == (0, 4) and emb.shape == (0, 16)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8)
    return images[:800], data.target[:800].astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits):
    images, targets = digits
    settings = TrainSettings(
        image_size=8, channels=1, epochs=6, min_steps=1, batch_size=32, threads=2
    )
    return clf.train_classifier(images, targets, 10, settings), settings


def test_training_on_digits_beats_chance(trained):
    result, _ = trained
    metrics = result.metrics
    # Calibrated and measured on the 160 held out, then trained again on all 800.
    assert metrics["n_val"] == 160 and metrics["n_train"] == 800 and metrics["refit"]
    assert metrics["steps"] == 6 * 25
    assert metrics["accuracy"] > 0.5  # chance is 0.1
    assert set(metrics["per_class"]) == set(range(10))
    assert clf.TEMPERATURE_BOUNDS[0] <= result.temperature <= clf.TEMPERATURE_BOUNDS[1]
    assert metrics["val_loss"] <= metrics["val_loss_uncalibrated"] + 1e-6
    assert not result.model.training


def test_without_refit_the_held_out_model_is_kept(digits):
    images, targets = digits[0][:100], digits[1][:100]
    settings = TrainSettings(image_size=8, epochs=1, min_steps=40, batch_size=16, refit=False)
    result = clf.train_classifier(images, targets, 10, settings)
    assert result.metrics["n_train"] == 80 and not result.metrics["refit"]
    assert result.metrics["steps"] == 40  # min_steps outweighs one epoch of 5 batches


def test_training_is_reproducible(digits):
    images, targets = digits[0][:60], digits[1][:60]
    settings = TrainSettings(image_size=8, epochs=2, min_steps=1, batch_size=16, random_state=3)
    first = clf.train_classifier(images, targets, 10, settings)
    second = clf.train_classifier(images, targets, 10, settings)
    a, _ = clf.predict(first.model, images, first.temperature)
    b, _ = clf.predict(second.model, images, second.temperature)
    np.testing.assert_array_equal(a, b)


def test_checkpoint_round_trip(trained, digits):
    result, settings = trained
    names = [str(d) for d in range(10)]
    data = clf.save_checkpoint(result, names, settings)
    model, temperature, labels, train_settings = clf.load_checkpoint(data)
    assert labels == names and temperature == result.temperature
    assert TrainSettings(**train_settings) == settings
    images = digits[0][:50]
    before = clf.predict(result.model, images, result.temperature)
    after = clf.predict(model, images, temperature)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_load_checkpoint_refuses_garbage():
    with pytest.raises(DataError, match="train a new model"):
        clf.load_checkpoint(b"not a checkpoint")


def test_tiny_label_sets():
    settings = TrainSettings(image_size=8, epochs=1, min_steps=1, batch_size=4)
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match="at least 2 images"):
        clf.train_classifier(images[:1], np.array([0]), 2, settings)
    with pytest.raises(DataError, match="same class"):
        clf.train_classifier(images, np.array([1, 1, 1]), 2, settings)
    # Too few to hold anything out: trains on everything, temperature stays 1.
    result = clf.train_classifier(images[:2], np.array([0, 1]), 2, settings)
    assert result.temperature == 1.0 and result.metrics["n_val"] == 0
    assert result.metrics["accuracy"] is None


def test_fit_temperature_softens_overconfident_logits():
    import torch

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) * 10  # confident, and mostly wrong
    temperature = clf.fit_temperature(torch.tensor(logits), torch.tensor(targets))
    assert temperature > 1.0
    assert clf.fit_temperature(torch.empty((0, 3)), torch.empty(0)) == 1.0
