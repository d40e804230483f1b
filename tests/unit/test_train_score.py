import io

import numpy as np
import pytest
from PIL import Image

from alpha.errors import DataError
from alpha.kinds.classification import TEMPERATURE_BOUNDS
from alpha.records import LabelRecord, write_record
from alpha.score import Keep, score_pool
from alpha.store import Store
from alpha.strategies import top_k
from alpha.train import load_model, new_usable_labels, train_model

LABELS = ["dark", "bright", "striped"]


def _png(label: str, rng: np.random.Generator) -> bytes:
    """Three classes a tiny CNN separates in a few epochs."""
    noise = rng.integers(0, 40, (10, 10))
    if label == "dark":
        pixels = noise
    elif label == "bright":
        pixels = 215 + noise
    else:
        pixels = noise + 215 * (np.arange(10)[:, None] % 2 == 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _add_image(store: Store, name: str, data: bytes) -> tuple[str, str]:
    key = store.image_key(name)
    store.put_bytes(key, data)
    return store.image_id_for(key), key


def _label(store: Store, image_id: str, key: str, label: str | None, status="labeled"):
    write_record(
        store,
        LabelRecord(image_id=image_id, image_key=key, status=status, label=label, source="seed"),
    )


@pytest.fixture
def project(store):
    """12 labeled images per class, odd records and files, and an unlabeled pool of 20."""
    rng = np.random.default_rng(0)
    labeled = {}
    for label in LABELS:
        for i in range(12):
            image_id, key = _add_image(store, f"train/{label}_{i}.png", _png(label, rng))
            _label(store, image_id, key, label)
            labeled[image_id] = label
    odd = {}
    odd["corrupt"] = _add_image(store, "train/corrupt.png", b"\x89PNG\r\n\x1a\n broken")
    _label(store, *odd["corrupt"], "dark")
    odd["gone"] = (store.image_id_for(store.image_key("train/gone.png")),
                   store.image_key("train/gone.png"))
    _label(store, *odd["gone"], "bright")  # its image was deleted from the bucket
    odd["horse"] = _add_image(store, "train/horse.png", _png("dark", rng))
    _label(store, *odd["horse"], "horse")
    odd["skip"] = _add_image(store, "train/skip.png", _png("dark", rng))
    _label(store, *odd["skip"], None, status="skipped")
    pool = {}
    for i in range(20):
        label = LABELS[i % 3]
        pool[_add_image(store, f"pool/{i:02d}.png", _png(label, rng))[0]] = label
    pool_corrupt = _add_image(store, "pool/zz_corrupt.jpg", b"\xff\xd8\xff not really")[0]
    return {"labeled": labeled, "odd": odd, "pool": pool, "pool_corrupt": pool_corrupt}


def test_load_model_before_training(store):
    with pytest.raises(DataError, match="No model trained yet"):
        load_model(store)


def test_train_without_labels(store, settings):
    with pytest.raises(DataError, match="No usable labels"):
        train_model(store, settings)


def test_train_then_score(store, settings, project):
    info = train_model(store, settings, version="v1")
    odd = project["odd"]

    assert info.version == "v1" and info.n_labels == 36
    assert set(info.ignored) == {odd["horse"][0], odd["skip"][0]}
    assert "'horse' is not one of task.labels" in info.ignored[odd["horse"][0]]
    assert len(info.skipped) == 2
    assert any("corrupt.png" in msg and "cannot be read" in msg for msg in info.skipped)
    assert any("gone.png" in msg and "missing" in msg for msg in info.skipped)

    files = {name: store.model_key("v1", name) for name in
             ("model.pt", "labels_seen.json", "metrics.json")}
    assert all(store.exists(key) for key in files.values())
    assert store.get_json(files["labels_seen.json"]) == project["labeled"]
    manifest = store.get_json(files["metrics.json"])
    assert manifest["version"] == "v1" and manifest["n_labels"] == 36
    assert manifest["labels"] == LABELS and manifest["skipped"] == info.skipped
    low, high = TEMPERATURE_BOUNDS
    assert low <= manifest["temperature"] <= high and "created_at" in manifest
    assert manifest["temperature"] != 1.0  # fitted on the held-out split, not the default
    assert store.get_json(store.key("models", "latest.json")) == {"version": "v1"}

    loaded = load_model(store)
    assert loaded.version == "v1" and loaded.labels == LABELS
    queued = sorted(project["pool"])[:5]
    records = set(project["labeled"]) | {image_id for image_id, _ in odd.values()}
    progress: list[tuple[int, int]] = []
    scores = score_pool(store, loaded, settings, exclude=records | set(queued),
                        progress=lambda *step: progress.append(step))
    assert progress[-1] == (16, 16)  # 15 scored and the corrupt one, found unreadable
    assert [done for done, _ in progress] == sorted({done for done, _ in progress})

    # A later round (the cache's manifest is there) takes the bar's total from it: the pool
    # is listed once, for the plan, not a second time for the total.
    listings = []
    store.list_images = lambda *a, **k: listings.append(a) or iter(())
    again: list[tuple[int, int]] = []
    score_pool(store, loaded, settings, exclude=records | set(queued),
               progress=lambda *step: again.append(step))
    assert listings == [] and again[-1] == (16, 16)
    assert all(done <= total for done, total in again)
    del store.list_images

    expected = sorted(set(project["pool"]) - set(queued))
    assert sorted(scores.image_ids) == expected and len(expected) == 15
    assert scores.keys == [store.image_key(f"pool/{i:02d}.png") for i in range(20)
                           if store.image_id_for(store.image_key(f"pool/{i:02d}.png"))
                           in scores.image_ids]
    pool = scores.scores  # reduced per image: no probabilities are kept
    assert set(pool.scores) == {"least_confidence", "margin", "entropy", "variation_ratio"}
    assert all(v.shape == (15,) and v.dtype == np.float64 for v in pool.scores.values())
    assert ((pool.confidence >= 1 / 3) & (pool.confidence <= 1)).all()
    np.testing.assert_allclose(pool.scores["least_confidence"], 1 - pool.confidence)
    assert len(scores.skipped) == 1 and "'proj/images/pool/zz_corrupt.jpg'" in scores.skipped[0]

    predicted = [LABELS[p] for p in pool.predicted]
    truth = [project["pool"][i] for i in scores.image_ids]
    assert np.mean([p == t for p, t in zip(predicted, truth, strict=True)]) > 0.6
    assert scores.embeddings.shape == (15, loaded.model.embedding_dim)
    assert scores.embeddings.dtype == np.float32


def test_score_with_mc_samples_and_only_some_images(store, settings, project):
    train_model(store, settings, version="v1")
    loaded = load_model(store)
    wanted = sorted(project["pool"])[:7]
    one = score_pool(store, loaded, settings, include=wanted)
    assert sorted(one.image_ids) == wanted and one.scores.scores["margin"].shape == (7,)
    assert "bald" not in one.scores.scores

    settings.loop.score_batch_size = 3  # several batches must share the same dropout masks
    progress: list[tuple[int, int]] = []
    mc = score_pool(store, loaded, settings, include=wanted, mc_samples=5,
                    progress=lambda *step: progress.append(step))
    assert progress == [(3, 7), (6, 7), (7, 7)]  # after each batch of 3
    assert mc.image_ids == one.image_ids and mc.scores.scores["bald"].shape == (7,)
    np.testing.assert_allclose(mc.embeddings, one.embeddings, rtol=1e-5, atol=1e-6)
    assert mc.scores.scores["bald"].max() > 0  # the samples differ: dropout really sampled
    again = score_pool(store, loaded, settings, include=wanted, mc_samples=5)
    for name, values in mc.scores.scores.items():  # seeded: a re-run scores the same
        np.testing.assert_array_equal(again.scores.scores[name], values)

    none = score_pool(store, loaded, settings, include=[], mc_samples=5)
    assert none.image_ids == [] and len(none.scores) == 0


def test_default_version_and_latest_moves(store, settings, project):
    first = train_model(store, settings)
    assert first.version.startswith("m") and first.version.endswith("-n36")
    train_model(store, settings, version="v2")
    assert load_model(store).version == "v2"
    assert load_model(store, first.version).version == first.version
    with pytest.raises(DataError, match="does not exist"):
        load_model(store, "nope")


def test_only_usable_labels_the_model_has_not_seen_count_as_new(store, settings, project):
    """The bug this guards: comparing every labeled record with the model's usable ones made
    an unreadable image or an unknown label look like a new label on every round."""
    # Before any model every label of a known class counts (images are not decoded to
    # count): 36 good ones, the corrupt and the missing image's.
    assert new_usable_labels(store, settings) == 38
    train_model(store, settings)
    assert new_usable_labels(store, settings) == 0  # corrupt, gone and 'horse' are not new
    rng = np.random.default_rng(1)
    _label(store, *_add_image(store, "train/new.png", _png("bright", rng)), "bright")
    dark_id, dark_key = next(iter(project["labeled"].items()))
    _label(store, dark_id, dark_key, "striped")  # an edited label is new to the model
    _label(store, *project["odd"]["horse"], "dark")  # fixed to a known class: new
    assert new_usable_labels(store, settings) == 3


def test_a_bounded_scoring_keeps_the_whole_pools_candidates(store, settings, project):
    train_model(store, settings, version="v1")
    loaded = load_model(store)
    exclude = set(project["labeled"]) | {image_id for image_id, _ in project["odd"].values()}
    whole = score_pool(store, loaded, settings, exclude=exclude)
    settings.loop.cache_shard_size = 4  # the cached pool is cut into shards of 4 to 7
    bounded = score_pool(store, loaded, settings, exclude=exclude, keep=Keep(("margin",), 5))

    assert whole.n_scored == bounded.n_scored == 20 and len(bounded.image_ids) == 5
    top = sorted(top_k(whole.scores.scores["margin"], 5))
    assert bounded.image_ids == [whole.image_ids[i] for i in top]
    np.testing.assert_allclose(bounded.scores.scores["margin"],
                               whole.scores.scores["margin"][top], rtol=1e-5, atol=1e-6)
    assert bounded.skipped == whole.skipped and len(bounded.skipped) == 1
