"""The pool cache against the real S3 server: its listing order and ETags are what the cache
relies on, and a changed, deleted or damaged thing is found there as with the fake."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from alpha.images import decode_pixels
from alpha.pool_cache import PoolCache, Preprocessing

pytestmark = pytest.mark.integration

PREP = Preprocessing(width=8, height=8, channels=1)


def digit_png(pixels: np.ndarray) -> bytes:
    """An 8x8 digit (0..16) as a 16x16 PNG."""
    array = (np.asarray(pixels).reshape(8, 8) * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).resize((16, 16), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def _pass(cache: PoolCache) -> tuple[dict[str, np.ndarray], list]:
    pixels, infos = {}, []
    for plan in cache.plan():
        shard, info = cache.load(plan)
        rows = shard.rows()
        pixels.update({key: shard.pixels[rows[i]] for i, key in enumerate(shard.keys)
                       if rows[i] >= 0})
        infos.append(info)
    cache.commit([info for info in infos if info is not None])
    return pixels, infos


def test_the_cache_on_seaweedfs(store, tmp_path):
    digits = load_digits().images[:40]
    # Names whose byte order is not their length order, to check the listing's order.
    images = {store.image_key(f"cache/{name}.png"): digit_png(pixels) for name, pixels in
              zip([f"d{i}" for i in range(40)], digits, strict=True)}
    for key, data in images.items():
        store.put_bytes(key, data)
    listed = [ref.key for ref, _ in store.list_image_etags()]
    assert listed == sorted(listed) and set(images) <= set(listed)

    gets: list[str] = []  # every GET, through boto3 or the store's obstore client
    plain, read = store.client.get_object, store._read_or_none

    def counted(**kwargs):
        gets.append(kwargs["Key"])
        return plain(**kwargs)

    def counted_read(key: str):
        gets.append(key)
        return read(key)

    assert store.obstore_client is not None  # the real path: obstore's GETs
    store.client.get_object, store._read_or_none = counted, counted_read
    try:
        cache = PoolCache(store, PREP, tmp_path, shard_size=8)
        pixels, infos = _pass(cache)
        for key, data in images.items():
            np.testing.assert_array_equal(pixels[key], decode_pixels(data, key, (8, 8), 1))
        assert sum(info.count for info in infos) == len(listed)

        gets.clear()
        _pass(PoolCache(store, PREP, tmp_path / "another-machine", shard_size=8))
        assert not [k for k in gets if "/images/" in k]  # shards from the bucket

        changed, deleted = sorted(images)[3], sorted(images)[20]
        store.put_bytes(changed, digit_png(digits[0] * 0))  # new bytes, new ETag
        store.delete(deleted)
        gets.clear()
        after, _ = _pass(cache)
        assert [k for k in gets if "/images/" in k] == [changed]
        assert deleted not in after and (after[changed] == 0).all()

        # A shard damaged in the bucket and gone locally is rebuilt from the images.
        first = cache.manifest()[0]
        store.put_bytes(cache.bucket_key(f"{first.name}.npz"), b"not a shard")
        (cache.local / f"{first.name}.npz").unlink()
        gets.clear()
        rebuilt, _ = _pass(cache)
        assert len([k for k in gets if "/images/" in k]) == first.count
        assert all(np.array_equal(rebuilt[k], after[k]) for k in after)
    finally:
        store.client.get_object = plain
        del store._read_or_none
