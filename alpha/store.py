"""The S3 bucket as alpha's source of truth.

One bucket, one prefix per project, laid out as the design says:
`images/` (the user's images), `labels/{image_id}.json`, `models/{version}/`,
`rounds/{round}/`, `cache/`. Keys are stable so a retried write overwrites instead of
duplicating; each object PUT is atomic, and a record is written after what it points to.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import boto3
import obstore
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from obstore.exceptions import (
    BaseError as ObjectStoreError,
)
from obstore.exceptions import (
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store as ObstoreClient

from alpha.config import S3Settings, Settings
from alpha.errors import ServiceRefused, ServiceUnavailable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_KEY_BYTES = 1024  # S3's limit on a whole key
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_JOINERS = ("\u200c", "\u200d")

MISSING_CODES = ("NoSuchKey", "404", "NotFound")
"""The error codes S3 servers answer a GET or HEAD of a key that does not exist with."""
NO_BUCKET = "NoSuchBucket"
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")  # the server's XML, quoted by obstore's errors

P = ParamSpec("P")
R = TypeVar("R")


def image_id_from_key(relative_key: str) -> str:
    """A stable, URL-safe id for an image, from its key relative to `images/`.

    The readable part helps people; the hash part keeps `a/b.png` and `a_b.png` apart.
    """
    stem = relative_key.rsplit(".", 1)[0]
    readable = _UNSAFE.sub("_", stem).strip("_")[-48:] or "image"
    digest = hashlib.sha1(relative_key.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}"


def key_problem(path: str) -> str | None:
    """Why `path` cannot be (part of) an S3 key alpha builds, or None when it can.

    Each reason would lose or mix up images otherwise: an absolute path or `..` escapes the
    prefix; empty and `.` parts are collapsed by some S3 servers (two names, one object); a
    backslash is a Windows folder separator, so the name means another folder; a name that
    is not valid UTF-8 cannot be a key; control characters and invisible formatting (bidi
    overrides, zero-width spaces) break logs or disguise a name as another; and `?` ends the
    name early when Label Studio reads an image's s3:// URI as a URL, so the annotator would
    get no image.
    """
    if not path or path.startswith("/") or "\\" in path:
        return "must be a relative path with '/' between folders"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 (S3 keys are UTF-8)"
    path = unicodedata.normalize("NFC", path)
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "no empty, '.' or '..' parts"
    hidden = sorted({f"U+{ord(c):04X}" for c in path if _is_hidden(c)})
    if hidden:
        return f"control characters ({', '.join(hidden)})"
    if "?" in path:
        return "'?' cuts the name short in Label Studio's image URL"
    return None


def validate_relative_key(relative_key: str) -> str:
    """Check that a user's file name can be a key under `images/`; return it in Unicode NFC.

    NFC makes a name stored decomposed (as macOS does) and the same name typed in a label
    CSV one key and one image id. See key_problem for what is refused and why.
    """
    problem = key_problem(relative_key)
    if problem is not None:
        raise ValueError(f"invalid image name {_shown(relative_key)}: {problem}; rename the file")
    return unicodedata.normalize("NFC", relative_key)


def _is_hidden(char: str) -> bool:
    """Control, line-separator and invisible formatting characters, except the zero-width
    joiners that emoji and some scripts need."""
    category = unicodedata.category(char)
    return category in ("Cc", "Cs", "Zl", "Zp") or (category == "Cf" and char not in _JOINERS)


def _shown(name: str, limit: int = 80) -> str:
    """A name for a message: repr (control characters visible), cut when very long."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(name)} characters)"


def is_missing(error: ClientError) -> bool:
    """Whether `error` says the object does not exist (see MISSING_CODES)."""
    return error.response.get("Error", {}).get("Code") in MISSING_CODES


def missing_image(key: str) -> str:
    """The problem of an image listed, then gone before it could be read."""
    return f"Image {key!r} is missing from the bucket: restore it or delete its label record."


def make_s3_client(settings: S3Settings):
    """A boto3 S3 client for any S3 server; SigV4 so presigned URLs work on SeaweedFS too."""
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url or None,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id.get_secret_value(),
        aws_secret_access_key=settings.secret_access_key.get_secret_value(),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=32,
        ),
    )


def make_obstore_client(settings: S3Settings) -> ObstoreClient:
    """obstore's S3 client for bulk work (many GETs, listings, PUTs): its requests run in
    Rust without the GIL, about 6x boto3's GETs and 7x its listed keys/s from the local
    SeaweedFS on 2 cores (bench/README.md). The same endpoint, region, credentials,
    timeouts and retries as `make_s3_client`."""
    endpoint = settings.endpoint_url or None
    return ObstoreClient(
        settings.bucket,
        endpoint=endpoint,
        region=settings.region,
        access_key_id=settings.access_key_id.get_secret_value(),
        secret_access_key=settings.secret_access_key.get_secret_value(),
        virtual_hosted_style_request=False,
        client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")),
                        "connect_timeout": "5s", "timeout": "30s", "pool_max_idle_per_host": "32"},
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30),
                      "backoff": {"init_backoff": timedelta(milliseconds=100),
                                  "max_backoff": timedelta(seconds=5), "base": 2.0}},
    )


def _refusal(store: Store, code: str) -> ServiceRefused | None:
    """What S3's error `code` means for the settings, or None for a code not about them."""
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
        return ServiceRefused(
            f"S3 at {store.endpoint} refused the access key ({code}): check "
            "s3.access_key_id and s3.secret_access_key."
        )
    if code == "InvalidBucketName":
        return ServiceRefused(
            f"S3 at {store.endpoint} refused the bucket name {store.bucket!r} as invalid: "
            "fix s3.bucket (3-63 lowercase letters, digits, dots and hyphens)."
        )
    if code == "KeyTooLongError":
        return ServiceRefused(
            f"S3 at {store.endpoint} refused a key as too long: shorten s3.prefix or the "
            "image names."
        )
    if code == NO_BUCKET:
        return ServiceRefused(
            f"S3 bucket {store.bucket!r} does not exist at {store.endpoint}: create it "
            "(`alpha ingest` does) or fix s3.bucket."
        )
    return None


def _object_store_code(error: Exception) -> str:
    """The S3 error code in an obstore error's text (it carries the server's XML body),
    or "403" for a refusal without one."""
    found = _S3_CODE.search(str(error))
    if found:
        return found.group(1)
    return "403" if isinstance(error, PermissionDeniedError | UnauthenticatedError) else ""


@contextmanager
def _translated_errors(store: Store) -> Iterator[None]:
    """Turn boto's and obstore's errors into ServiceUnavailable messages that say what to
    fix."""
    try:
        yield
    except EndpointConnectionError:
        raise ServiceUnavailable(
            f"S3 endpoint {store.endpoint} is unreachable: start it (`alpha stack up`) "
            "or fix s3.endpoint_url."
        ) from None
    except NoCredentialsError:
        raise ServiceRefused(
            "No S3 credentials: set s3.access_key_id and s3.secret_access_key."
        ) from None
    except ClientError as error:
        refusal = _refusal(store, error.response.get("Error", {}).get("Code", ""))
        if refusal is not None:
            raise refusal from None
        raise
    except BotoCoreError as error:
        raise ServiceUnavailable(f"S3 at {store.endpoint} failed: {error}") from None
    except (ObjectStoreError, FileNotFoundError) as error:  # obstore's (a missing object too)
        refusal = _refusal(store, _object_store_code(error))
        if refusal is not None:
            raise refusal from None
        if isinstance(error, FileNotFoundError):
            raise
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "error sending request" in first:  # no connection (obstore has retried)
            raise ServiceUnavailable(
                f"S3 endpoint {store.endpoint} is unreachable: start it (`alpha stack up`) "
                "or fix s3.endpoint_url."
            ) from None
        raise ServiceUnavailable(
            f"S3 at {store.endpoint} failed ({first[:300]}): see the S3 server's log, "
            "retry."
        ) from None


def _s3_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Apply `_translated_errors` to a Store method, generators included."""
    if inspect.isgeneratorfunction(method):

        @wraps(method)
        def generator_wrapper(*args: P.args, **kwargs: P.kwargs):
            with _translated_errors(args[0]):  # type: ignore[arg-type]
                yield from method(*args, **kwargs)

        return generator_wrapper  # type: ignore[return-value]

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _translated_errors(args[0]):  # type: ignore[arg-type]
            return method(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class ImageRef:
    """An image in the bucket: its stable id and its full key."""

    image_id: str
    key: str


class Store:
    """Typed access to one project's prefix in the bucket."""

    def __init__(self, client, bucket: str, prefix: str, endpoint: str | None = None,
                 obstore_client: ObstoreClient | None = None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint or "AWS S3"
        # Bulk S3 work (many GETs, every listing, PUTs) goes through obstore; None (the
        # unit tests' in-memory fake client): boto3's interface does everything.
        self.obstore_client = obstore_client

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(
            make_s3_client(settings.s3),
            settings.s3.bucket,
            settings.s3.prefix,
            settings.s3.endpoint_url,
            make_obstore_client(settings.s3),
        )

    def with_prefix(self, prefix: str) -> Store:
        """The same bucket and clients under another project's prefix."""
        return Store(self.client, self.bucket, prefix, self.endpoint, self.obstore_client)

    # ---- keys -------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])

    def image_key(self, relative_key: str) -> str:
        """The key of a user's image; ValueError naming the problem for a name that cannot be
        one (see validate_relative_key), including one too long for S3 under this prefix."""
        key = self.key("images", validate_relative_key(relative_key))
        size = len(key.encode("utf-8"))
        if size > MAX_KEY_BYTES:
            raise ValueError(
                f"invalid image name {_shown(relative_key)}: its S3 key would be {size} bytes, "
                f"over S3's limit of {MAX_KEY_BYTES}; use a shorter name or fewer folders"
            )
        return key

    def label_key(self, image_id: str) -> str:
        return self.key("labels", f"{image_id}.json")

    def mask_key(self, image_id: str) -> str:
        """The mask PNG beside an image's label record (segmentation kinds)."""
        return self.key("labels", f"{image_id}.png")

    def task_image_key(self, data_key: str, image_id: str) -> str:
        """An extra image a task shows beside its own (e.g. the uncertainty map), by the
        task data key that names it; derived, rewritten by each push of the image."""
        return self.key("task-images", data_key, f"{image_id}.png")

    def model_key(self, version: str, name: str) -> str:
        return self.key("models", version, name)

    def round_key(self, round_id: str, name: str) -> str:
        return self.key("rounds", round_id, name)

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def image_id_for(self, key: str) -> str:
        return image_id_from_key(key.removeprefix(self.key("images") + "/"))

    # ---- objects ----------------------------------------------------------------------
    @_s3_errors
    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    @_s3_errors
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream"):
        """One object, whole (a plain PUT: its ETag is the MD5 of `data`); through obstore
        when the store has its client (a pull's 2,000 records took a fifth of boto3's time
        here)."""
        if self.obstore_client is not None:
            obstore.put(self.obstore_client, key, data, attributes={"Content-Type": content_type},
                        use_multipart=False)
            return
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    @_s3_errors
    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put_json(self, key: str, obj: Any) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        self.put_bytes(key, data, "application/json")

    @_s3_errors
    def get_json(self, key: str, default: Any = None) -> Any:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return default
            raise
        return json.loads(body)

    @_s3_errors
    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    @_s3_errors
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    @_s3_errors
    def list_entries(self, sub_prefix: str) -> Iterator[dict[str, Any]]:
        """The listing entry (Key, Size, ETag...) of every object under `{prefix}/{sub_prefix}`,
        page by page. The ETag of a plain upload is the MD5 of its bytes: ingest compares it
        to tell an image already uploaded from a different file under the same name."""
        if self.obstore_client is not None:  # pages parsed in Rust: ~7x boto3's keys/s
            for page in obstore.list(self.obstore_client, self.key(sub_prefix), chunk_size=1000):
                for meta in page:
                    yield {"Key": meta["path"], "Size": meta["size"], "ETag": meta["e_tag"],
                           "LastModified": meta["last_modified"]}
            return
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(sub_prefix)):
            yield from page.get("Contents", [])

    def list_objects(self, sub_prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `{prefix}/{sub_prefix}`, page by page."""
        return ((item["Key"], item["Size"]) for item in self.list_entries(sub_prefix))

    def list_keys(self, sub_prefix: str) -> Iterator[str]:
        return (key for key, _ in self.list_objects(sub_prefix))

    @_s3_errors
    def presigned_url(self, key: str, expires_s: int = 900) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )

    @_s3_errors
    def get_many(self, keys: Sequence[str], workers: int = 16) -> list[bytes | None]:
        """Many objects' bytes in parallel (S3 latency, not bandwidth, is the limit), None
        for a key that is gone; through obstore when the store has its client."""
        get = self._read_or_none if self.obstore_client is not None else self._get_or_none
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(get, keys))

    def _read_or_none(self, key: str) -> bytes | None:
        try:
            return obstore.get(self.obstore_client, key).bytes().to_bytes()
        except FileNotFoundError as error:
            if NO_BUCKET in str(error):  # the bucket is gone, not the object
                raise
            return None

    def _get_or_none(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if is_missing(error):
                return None
            raise

    # ---- the layout -------------------------------------------------------------------
    def list_images(self) -> Iterator[ImageRef]:
        return (ref for ref, _ in self.list_image_etags())

    def list_image_etags(self) -> Iterator[tuple[ImageRef, str]]:
        """Every image under `images/` in key order with its ETag, which changes whenever
        its bytes do (the pool cache's test of what changed)."""
        for item in self.list_entries("images/"):
            key = item["Key"]
            if key.lower().endswith(IMAGE_SUFFIXES):
                yield ImageRef(self.image_id_for(key), key), str(item.get("ETag", ""))

    def list_label_ids(self) -> set[str]:
        start = len(self.key("labels")) + 1
        return {k[start:].removesuffix(".json") for k in self.list_keys("labels/")
                if k.endswith(".json")}

    def list_subfolders(self, sub_prefix: str) -> list[str]:
        """Names one level below `{prefix}/{sub_prefix}/` (model versions, round ids)."""
        start = len(self.key(sub_prefix)) + 1
        return sorted({key[start:].split("/", 1)[0] for key in self.list_keys(sub_prefix + "/")})
