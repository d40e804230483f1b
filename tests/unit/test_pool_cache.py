"""The pool cache: built once, rebuilt only for what changed, never trusted when damaged."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from alpha.images import decode_image, decode_pixels
from alpha.pool_cache import PoolCache, Preprocessing
from alpha.store import Store

PREP = Preprocessing(width=6, height=5, channels=1)


@pytest.fixture
def gets(store: Store) -> list[str]:
    """Keys of every GET the store's client answers from now on."""
    seen: list[str] = []
    plain = store.client.get_object

    def counted(Bucket: str, Key: str) -> dict:
        seen.append(Key)
        return plain(Bucket=Bucket, Key=Key)

    store.client.get_object = counted
    return seen


def image_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _pool(store: Store, n: int, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        key = store.image_key(f"pool/{i:03d}.png")
        images[key] = image_bytes(rng.integers(0, 256, (10, 12)))
        store.put_bytes(key, images[key])
    return images


def _pass(cache: PoolCache):
    """One complete use of the cache: every shard loaded, the manifest committed; returns
    {key: pixels}, {key: problem} and the shards' infos."""
    pixels, problems, infos = {}, {}, []
    for plan in cache.plan():
        shard, info = cache.load(plan)
        rows = shard.rows()
        for i, key in enumerate(shard.keys):
            if rows[i] >= 0:
                pixels[key] = shard.pixels[rows[i]]
            else:
                problems[key] = shard.problems[i]
        problems.update(dict(shard.missing))
        if info is not None:
            infos.append(info)
    cache.commit(infos)
    return pixels, problems, infos


def _image_gets(gets: list[str]) -> list[str]:
    return [key for key in gets if "/images/" in key]


def test_first_pass_builds_shards_and_a_manifest_then_reads_nothing_again(store, tmp_path,
                                                                         gets):
    images = _pool(store, 10)
    cache = PoolCache(store, PREP, tmp_path, shard_size=4)
    pixels, problems, infos = _pass(cache)

    assert problems == {} and sorted(pixels) == sorted(images)
    for key, data in images.items():  # the cached pixels are exactly what decoding makes
        np.testing.assert_array_equal(pixels[key], decode_pixels(data, key, (6, 5), 1))
        np.testing.assert_array_equal(pixels[key] / np.float32(255.0),
                                      decode_image(data, key, (6, 5), 1))
    assert [info.count for info in infos] == [4, 6]  # a run is cut once it reaches 2 x 4
    assert sorted(_image_gets(gets)) == sorted(images)
    manifest = store.get_json(store.key("cache", PREP.name, "manifest.json"))
    assert [s["name"] for s in manifest["shards"]] == [info.name for info in infos]
    assert manifest["preprocessing"] == {"width": 6, "height": 5, "channels": 1}
    for info in infos:
        assert store.exists(store.key("cache", PREP.name, f"{info.name}.npz"))
        assert (cache.local / f"{info.name}.npz").is_file()

    gets.clear()
    again, _, infos_again = _pass(cache)
    assert _image_gets(gets) == [] and infos_again == infos
    assert all(np.array_equal(again[key], pixels[key]) for key in images)
    # A fresh machine (no local copy) takes the shards from the bucket, not the images.
    gets.clear()
    other = PoolCache(store, PREP, tmp_path / "elsewhere", shard_size=4)
    _pass(other)
    assert _image_gets(gets) == [] and len(gets) == 3  # the manifest and the two shards


def test_only_what_changed_is_fetched_and_a_deleted_image_is_dropped(store, tmp_path, gets):
    images = _pool(store, 10)
    cache = PoolCache(store, PREP, tmp_path, shard_size=4)
    _, _, before = _pass(cache)
    keys = sorted(images)
    changed, deleted = keys[1], keys[7]
    new = store.image_key("pool/005b.png")
    store.put_bytes(changed, image_bytes(np.full((10, 12), 7)))
    store.delete(deleted)
    store.put_bytes(new, image_bytes(np.full((10, 12), 200)))

    gets.clear()
    pixels, problems, after = _pass(cache)
    assert sorted(_image_gets(gets)) == sorted([changed, new])  # not the unchanged eight
    assert deleted not in pixels and problems == {}
    assert sorted(pixels) == sorted(set(keys) - {deleted} | {new})
    assert (pixels[changed] == 7).all() and (pixels[new] == 200).all()
    assert [info.count for info in after] == [4, 6]  # new in, deleted out of the second
    assert after[0].name != before[0].name and after[1].name != before[1].name
    # Shards no manifest names are deleted, in the bucket and locally.
    names = {f"{info.name}.npz" for info in after}
    assert {k.rsplit("/", 1)[1] for k in store.list_keys("cache/") if k.endswith(".npz")} \
        == names
    assert {p.name for p in cache.local.glob("*.npz")} == names


def test_a_growing_pool_splits_a_long_shard_and_keeps_the_others(store, tmp_path, gets):
    _pool(store, 8)
    cache = PoolCache(store, PREP, tmp_path, shard_size=4)
    _, _, first = _pass(cache)
    assert [info.count for info in first] == [4, 4]
    rng = np.random.default_rng(1)
    for i in range(8, 14):  # six more after the last key
        store.put_bytes(store.image_key(f"pool/{i:03d}.png"),
                        image_bytes(rng.integers(0, 256, (10, 12))))
    gets.clear()
    _, _, second = _pass(cache)
    assert [info.count for info in second] == [4, 4, 6]
    assert second[0] == first[0]  # untouched
    assert len(_image_gets(gets)) == 6


@pytest.mark.parametrize("damage", ["corrupt", "missing", "wrong-content"])
def test_a_damaged_shard_is_rebuilt_never_trusted(store, tmp_path, gets, damage):
    images = _pool(store, 6)
    cache = PoolCache(store, PREP, tmp_path, shard_size=8)
    pixels, _, (info,) = _pass(cache)
    bucket_key = store.key("cache", PREP.name, f"{info.name}.npz")
    local = cache.local / f"{info.name}.npz"

    # Damaged locally only: the bucket's copy is used (and restores the local one).
    local.write_bytes(local.read_bytes()[:-20])
    gets.clear()
    again, _, _ = _pass(cache)
    assert _image_gets(gets) == [] and all(np.array_equal(again[k], pixels[k]) for k in images)

    # Damaged in both: rebuilt from the images.
    if damage == "corrupt":
        data = bytearray(local.read_bytes())
        data[len(data) // 2] ^= 0xFF
        local.write_bytes(bytes(data))
        store.put_bytes(bucket_key, bytes(data))
    elif damage == "missing":
        local.unlink()
        store.delete(bucket_key)
    else:  # a valid shard of other images under this name
        other = store.with_prefix("other")
        _pool(other, 3, seed=5)
        other_cache = PoolCache(other, PREP, tmp_path / "other", shard_size=8)
        _, _, (other_info,) = _pass(other_cache)
        data = (other_cache.local / f"{other_info.name}.npz").read_bytes()
        local.write_bytes(data)
        store.put_bytes(bucket_key, data)
    gets.clear()
    rebuilt, problems, _ = _pass(cache)
    assert sorted(_image_gets(gets)) == sorted(images) and problems == {}
    assert all(np.array_equal(rebuilt[k], pixels[k]) for k in images)


def test_unreadable_and_vanished_images_are_reported_every_pass(store, tmp_path, gets):
    images = _pool(store, 3)
    broken = store.image_key("pool/broken.png")
    store.put_bytes(broken, b"\x89PNG\r\n\x1a\n not an image")
    cache = PoolCache(store, PREP, tmp_path, shard_size=8)
    _, problems, (info,) = _pass(cache)
    assert set(problems) == {broken} and "cannot be read" in problems[broken]
    assert info.count == 4  # kept, with its problem, so it is not fetched again
    gets.clear()
    _, again, _ = _pass(cache)
    assert again == problems and _image_gets(gets) == []

    # Listed, then gone before its GET: reported as missing, not cached.
    vanishing = store.image_key("pool/vanishing.png")
    store.put_bytes(vanishing, images[sorted(images)[0]])
    plan = next(cache.plan())
    store.delete(vanishing)
    shard, built = cache.load(plan)
    assert dict(shard.missing) == {vanishing: f"Image {vanishing!r} is missing from the bucket: "
                                   "restore it or delete its label record."}
    assert vanishing not in shard.keys and built.count == 4


def test_another_preprocessing_or_a_bad_manifest_has_no_cache(store, tmp_path, gets):
    images = _pool(store, 4)
    _pass(PoolCache(store, PREP, tmp_path))
    gets.clear()
    bigger = Preprocessing(width=8, height=8, channels=3)
    pixels, _, _ = _pass(PoolCache(store, bigger, tmp_path))
    assert sorted(_image_gets(gets)) == sorted(images)
    assert next(iter(pixels.values())).shape == (3, 8, 8)

    manifest = store.key("cache", PREP.name, "manifest.json")
    store.put_bytes(manifest, json.dumps({"format": 1, "shards": "?"}).encode())
    gets.clear()
    _pass(PoolCache(store, PREP, tmp_path))
    assert sorted(_image_gets(gets)) == sorted(images)
