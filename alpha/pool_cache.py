"""The pool kept packed and preprocessed, so a round reads each image from S3 once, not
every round.

The pool does not change between rounds, but decoding it does not get cheaper: every round
used to GET and decode every image (about 400 images/s here, while the model scores several
thousand). The cache keeps each image as the uint8 pixels `(C, H, W)` a model of one
preprocessing sees (see `Preprocessing`: size, channels and the decoder's version), packed
into numpy `.npz` shards of about `shard_size` images:

    {prefix}/cache/{preprocessing}/manifest.json      the shards, in key order
    {prefix}/cache/{preprocessing}/{digest}.npz       one shard (and a copy under the
                                                      local cache folder)

A shard holds a contiguous run of the `images/` listing (key order): every image's key and
ETag, the problem of those that cannot be read (kept, so an unreadable image is reported
every round as when it was read), and the pixels `(r, C, H, W)` of the r readable ones. The
manifest names each shard with the digest of its (key, ETag) list and the SHA-256 of its
file, so the images' ETags are recorded two levels deep: at ten million images the manifest
stays a few MB and each shard carries its own list.

What changed is found by listing: each use lists `images/` (keys and ETags, 1,000 per
request), cuts the listing at the manifest's shard boundaries and compares each run's
digest with its shard's. The same: the shard is used as it is. Different (an image new,
changed or deleted): that shard alone is rebuilt, from the old shard's rows whose ETag still
matches plus GETs of only the new and changed images; a deleted image simply has no row.
A run grown past twice `shard_size` is split. A change of model size or channels starts a
cache of its own preprocessing (the old one stays until deleted).

Safe to delete, never trusted: the cache is derived from the images. A shard missing locally
is taken from the bucket; one missing or corrupt in both (a SHA-256 that differs from the
manifest's, an unreadable zip, keys, ETags or shapes that do not match) is rebuilt from the
images, never used. A malformed manifest counts as none. Shard names are their content's
digest, so a write never changes a shard another reader is using; shards the new manifest
does not name are deleted after it is written.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from botocore.exceptions import ClientError

from alpha.config import Settings, alpha_home
from alpha.errors import ImageError
from alpha.images import decode_pixels
from alpha.store import Store, is_missing, missing_image

FORMAT = 1
DECODER = 1
"""The version of what alpha.images.decode_pixels makes: bump it when decoding changes, so
no cache made by the old decoder is used."""
FETCH_THREADS = 16
"""Images fetched and decoded at once while a shard is built (S3 latency is the limit)."""

Entry = tuple[str, str]
"""(key, ETag) of one listed image."""


@dataclass(frozen=True)
class Preprocessing:
    """How a cache's pixels were made: the model's input (width, height), its channels, and
    the decoder's version; a cache is only ever read for the same preprocessing."""

    width: int
    height: int
    channels: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}x{self.channels}-d{DECODER}"


@dataclass(frozen=True)
class ShardInfo:
    """A shard as the manifest records it: `name` (its file, the digest of its entries),
    `digest` of its (key, ETag) list, `sha256` of its file, its first key and image count."""

    name: str
    digest: str
    sha256: str
    first: str
    count: int


@dataclass
class ShardPlan:
    """One shard of a use of the cache: the listed `entries` it covers; `cached`, the
    manifest's shard with exactly these entries (None: it must be built); `previous`, the
    old shard whose rows a rebuild may reuse."""

    index: int
    entries: list[Entry]
    cached: ShardInfo | None = None
    previous: ShardInfo | None = None

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.entries]


@dataclass
class Shard:
    """The images of one shard: `keys` and `etags` (m,), `problems` (m,) ("" where the
    image could be read), `pixels` uint8 `(r, C, H, W)` of the readable ones in order;
    `missing` says which listed images were gone when it was built (not kept)."""

    keys: list[str]
    etags: list[str]
    problems: list[str]
    pixels: np.ndarray
    missing: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> np.ndarray:
        """For each image, its row in `pixels`, or -1 for an unreadable one `(m,)`."""
        readable = np.array([not p for p in self.problems], dtype=bool)
        rows = np.full(len(self.keys), -1, dtype=np.intp)
        rows[readable] = np.arange(int(readable.sum()))
        return rows

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(self.keys, dtype=str),
                 etags=np.array(self.etags, dtype=str),
                 problems=np.array(self.problems, dtype=str), pixels=self.pixels)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, prep: Preprocessing) -> Shard:
        """Read a shard file; ValueError unless it is whole and of this preprocessing."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                keys, etags, problems, pixels = (arrays[name] for name in
                                                 ("keys", "etags", "problems", "pixels"))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"unreadable shard: {error}") from None
        m = len(keys)
        readable = int(sum(1 for p in problems.tolist() if not p))
        shape = (readable, prep.channels, prep.height, prep.width)
        if len(etags) != m or len(problems) != m or pixels.dtype != np.uint8 \
                or pixels.shape != shape:
            raise ValueError(f"shard arrays do not fit: {m} keys, pixels {pixels.shape}")
        return cls(keys.tolist(), etags.tolist(), problems.tolist(), pixels)


def entries_digest(entries: Sequence[Entry]) -> str:
    """The digest of a (key, ETag) list: equal lists, equal digests; any change, another."""
    hasher = hashlib.sha256()
    for key, etag in entries:
        hasher.update(f"{key}\t{etag}\n".encode())
    return hasher.hexdigest()[:32]


class PoolCache:
    """The cache of one project's pool for one preprocessing (see the module docstring).

    `plan()` lists the pool and says, shard by shard, what is cached and what must be
    built; `load(plan)` returns a shard's images (cached, else built and stored) and its
    manifest entry; `commit(infos)` writes the manifest of one complete pass and deletes
    the shards it no longer names. Plans are plain data: another process (a Dask worker)
    with its own PoolCache can load them.
    """

    def __init__(self, store: Store, prep: Preprocessing, local_root: Path,
                 shard_size: int = 1024, fetch_threads: int = FETCH_THREADS):
        self.store = store
        self.prep = prep
        self.shard_size = shard_size
        self.fetch_threads = fetch_threads
        self.local = Path(local_root) / store.bucket / store.prefix / prep.name

    @classmethod
    def from_settings(cls, store: Store, settings: Settings, prep: Preprocessing) -> PoolCache:
        """Under loop.cache_dir (default `$ALPHA_HOME/cache`), loop.cache_shard_size images
        a shard."""
        root = Path(settings.loop.cache_dir) if settings.loop.cache_dir else alpha_home() / "cache"
        return cls(store, prep, root, settings.loop.cache_shard_size)

    # ---- where things are ---------------------------------------------------------------
    def bucket_key(self, name: str) -> str:
        return self.store.key("cache", self.prep.name, name)

    def manifest(self) -> list[ShardInfo]:
        """The shards of the last complete pass, in key order; [] when there is no manifest
        or it is not one this code wrote for this preprocessing (then all is rebuilt)."""
        data = self.store.get_json(self.bucket_key("manifest.json"))
        try:
            if data["format"] != FORMAT or data["preprocessing"] != asdict(self.prep) \
                    or data["decoder"] != DECODER:
                return []
            shards = [ShardInfo(**item) for item in data["shards"]]
        except (TypeError, KeyError):
            return []
        firsts = [s.first for s in shards]
        return shards if firsts == sorted(firsts) else []

    # ---- plan ---------------------------------------------------------------------------
    def plan(self) -> Iterator[ShardPlan]:
        """Shard by shard, what the pool is now: the listing of `images/` (key order, with
        ETags) cut at the manifest's shard boundaries, a run longer than 2 x shard_size cut
        into shard_size pieces. Streams: holds one shard's entries at a time."""
        old = self.manifest()
        bounds = [shard.first for shard in old[1:]]
        group: list[Entry] = []
        j = 0
        index = 0

        def made(entries: list[Entry], previous: ShardInfo | None) -> ShardPlan:
            nonlocal index
            cached = previous if previous is not None and previous.count == len(entries) \
                and previous.digest == entries_digest(entries) else None
            index += 1
            return ShardPlan(index - 1, entries, cached, previous)

        for ref, etag in self.store.list_image_etags():
            while j < len(bounds) and ref.key >= bounds[j]:
                if group:
                    yield made(group, old[j])
                group, j = [], j + 1
            group.append((ref.key, etag))
            if len(group) >= 2 * self.shard_size:
                yield made(group[: self.shard_size], old[j] if old else None)
                group = group[self.shard_size :]
        if group:
            yield made(group, old[j] if old else None)

    # ---- load ---------------------------------------------------------------------------
    def load(self, plan: ShardPlan) -> tuple[Shard, ShardInfo | None]:
        """The shard's images and its manifest entry (None when every image was gone): the
        cached shard if it is whole, else one built from the previous shard's matching rows
        and the images, stored in the bucket and locally."""
        if plan.cached is not None:
            shard = self._read(plan.cached)
            if shard is not None:
                return shard, plan.cached
        return self._build(plan)

    def _read(self, info: ShardInfo) -> Shard | None:
        """A shard that is exactly what `info` says, from the local copy or the bucket;
        None when neither is."""
        path = self.local / f"{info.name}.npz"
        data = path.read_bytes() if path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != info.sha256:
            try:
                data = self.store.get_bytes(self.bucket_key(f"{info.name}.npz"))
            except ClientError as error:
                if not is_missing(error):
                    raise
                return None
            if hashlib.sha256(data).hexdigest() != info.sha256:
                return None
            self._write_local(path, data)
        try:
            shard = Shard.from_bytes(data, self.prep)
        except ValueError:
            return None
        entries = list(zip(shard.keys, shard.etags, strict=True))
        if len(entries) != info.count or entries_digest(entries) != info.digest:
            return None
        return shard

    def _build(self, plan: ShardPlan) -> tuple[Shard, ShardInfo | None]:
        """Rows of the previous shard whose ETag matches, GETs and decodes of the rest."""
        reuse: dict[Entry, tuple[str, np.ndarray | None]] = {}
        old = self._read(plan.previous) if plan.previous is not None else None
        if old is not None:
            rows = old.rows()
            for i, entry in enumerate(zip(old.keys, old.etags, strict=True)):
                reuse[entry] = (old.problems[i], old.pixels[rows[i]] if rows[i] >= 0 else None)
        todo = [entry for entry in plan.entries if entry not in reuse]
        blobs = self.store.get_many([key for key, _ in todo], workers=self.fetch_threads)
        fetched = {entry: self._decoded(entry[0], blob)
                   for entry, blob in zip(todo, blobs, strict=True)}
        keys, etags, problems, pixels, missing = [], [], [], [], []
        for entry in plan.entries:
            found = reuse[entry] if entry in reuse else fetched[entry]
            if found is None:
                missing.append((entry[0], missing_image(entry[0])))
                continue
            problem, array = found
            keys.append(entry[0])
            etags.append(entry[1])
            problems.append(problem)
            if array is not None:
                pixels.append(array)
        prep = self.prep
        stacked = np.stack(pixels) if pixels else np.empty(
            (0, prep.channels, prep.height, prep.width), dtype=np.uint8)
        shard = Shard(keys, etags, problems, stacked, missing)
        if not keys:
            return shard, None
        data = shard.to_bytes()
        entries = list(zip(keys, etags, strict=True))
        digest = entries_digest(entries)
        info = ShardInfo(name=digest, digest=digest, sha256=hashlib.sha256(data).hexdigest(),
                         first=keys[0], count=len(keys))
        self.store.put_bytes(self.bucket_key(f"{info.name}.npz"), data)
        self._write_local(self.local / f"{info.name}.npz", data)
        return shard, info

    def _decoded(self, key: str, data: bytes | None) -> tuple[str, np.ndarray | None] | None:
        """(problem, pixels) of one image ("" and its pixels when it decodes); None when
        it is gone from the bucket."""
        if data is None:
            return None
        prep = self.prep
        try:
            return "", decode_pixels(data, key, (prep.width, prep.height), prep.channels)
        except ImageError as error:
            return str(error), None

    @staticmethod
    def _write_local(path: Path, data: bytes) -> None:
        """Write whole or not at all (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)

    # ---- commit -------------------------------------------------------------------------
    def commit(self, infos: Sequence[ShardInfo]) -> None:
        """Write the manifest of a complete pass (its shards, in key order), then delete the
        shards it does not name, in the bucket and locally."""
        self.store.put_json(self.bucket_key("manifest.json"), {
            "format": FORMAT, "decoder": DECODER, "preprocessing": asdict(self.prep),
            "shards": [asdict(info) for info in infos]})
        names = {f"{info.name}.npz" for info in infos}
        folder = self.bucket_key("")
        for key in list(self.store.list_keys(f"cache/{self.prep.name}/")):
            name = key.removeprefix(folder)
            if name.endswith(".npz") and name not in names:
                self.store.delete(key)
        if self.local.is_dir():
            for path in self.local.glob("*.npz"):
                if path.name not in names:
                    path.unlink(missing_ok=True)
