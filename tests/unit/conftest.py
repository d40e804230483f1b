"""Shared fixtures for unit tests: image bytes, a dict-backed S3 client, settings.

The fake S3 client sits under the real Store, so the Store's own key layout, JSON, listing
and parallel fetching run in the tests exactly as against a real bucket.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from alpha.config import Settings
from alpha.store import Store


def image_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    """A factory for small random images: make_image(fmt="PNG", size=(w, h), mode="L")."""
    rng = np.random.default_rng(0)

    def make(fmt: str = "PNG", size: tuple[int, int] = (12, 10), mode: str = "L") -> bytes:
        width, height = size
        shape = (height, width) if mode == "L" else (height, width, 3)
        return image_bytes(rng.integers(0, 256, shape), fmt)

    return make


class FakeS3Client:
    """The few boto3 S3 calls Store makes, backed by a dict; missing keys raise NoSuchKey."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _missing(operation: str) -> ClientError:
        return ClientError({"Error": {"Code": "NoSuchKey", "Message": "missing"}}, operation)

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "") -> dict:
        with self.lock:
            self.objects[(Bucket, Key)] = bytes(Body)
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict:
        with self.lock:
            if (Bucket, Key) not in self.objects:
                raise self._missing("GetObject")
            return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def head_object(self, Bucket: str, Key: str) -> dict:
        with self.lock:
            if (Bucket, Key) not in self.objects:
                raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict:
        with self.lock:
            self.objects.pop((Bucket, Key), None)
        return {}

    def get_paginator(self, name: str) -> FakeS3Client:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str):
        with self.lock:
            items = sorted(  # the ETag of a plain upload is its bytes' MD5, as S3's
                (k, len(v), f'"{hashlib.md5(v).hexdigest()}"')
                for (b, k), v in self.objects.items()
                if b == Bucket and k.startswith(Prefix)
            )
        for start in range(0, len(items), 1000):
            page = items[start : start + 1000]
            yield {"Contents": [{"Key": k, "Size": size, "ETag": etag}
                                for k, size, etag in page]}


@pytest.fixture
def store() -> Store:
    return Store(FakeS3Client(), bucket="test", prefix="proj")


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Small, fast settings: 8x8 grayscale images, a few epochs, two threads at most, the
    pool cache's local copy in the test's own folder."""
    return Settings(
        s3={"access_key_id": "k", "secret_access_key": "s", "prefix": "proj", "bucket": "test"},
        labelstudio={"api_key": "t"},
        task={"kind": "classification", "labels": ["dark", "bright", "striped"]},
        train={"image_size": 8, "channels": 1, "epochs": 8, "min_steps": 1, "batch_size": 16,
               "threads": 2},
        loop={"score_batch_size": 7, "cache_dir": str(tmp_path / "pool-cache")},
    )


@pytest.fixture
def bucket(store: Store) -> Store:
    """The unit fake plus what ingest needs: a bucket check, MD5 ETags in the listing, and
    a log of every key written."""
    client = store.client
    listing, put = client.paginate, client.put_object
    client.written = []

    def paginate(Bucket: str, Prefix: str):
        for page in listing(Bucket=Bucket, Prefix=Prefix):
            for item in page["Contents"]:
                body = client.objects[(Bucket, item["Key"])]
                item["ETag"] = f'"{hashlib.md5(body).hexdigest()}"'
            yield page

    def put_object(**kwargs):
        client.written.append(kwargs["Key"])
        return put(**kwargs)

    client.head_bucket = lambda Bucket: {}
    client.paginate = paginate
    client.put_object = put_object
    return store
