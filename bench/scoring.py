"""Scoring at scale: images/s from S3 to scores, peak memory, and Dask workers.

Against the running local stack's S3 (`alpha stack up`), in one run:

- rates (images/s, S3 to per-image scores, the classification kind's small CNN):
  alpha's scoring on the first read (cache cold: GET, decode, pack and score), on later
  rounds (cache warm: the local shards) and on a fresh machine (the bucket's shards only);
  a naive loop (one GET, one decode, one forward per image); and the model's compute-bound
  rate on in-memory tensors (the same batch size, no I/O);
- peak memory (RSS, a fresh subprocess per measurement, `resource.getrusage`) scoring pools
  of each `--memory-sizes`, with and without Monte-Carlo samples, keeping what the default
  strategy keeps (a bounded candidate set), and once keeping every row (what core-set,
  TypiClust and BADGE need) at the largest size;
- Dask: the warm pool scored by `--workers` local worker processes through prefect-dask.

The images are small generated PNGs (`--image-size` pixels square, grey: three patterns
with noise, as the unit tests' classes), uploaded once per pool size under prefixes of
their own, removed at the end (`--keep` keeps them). The model trains on 90 of them.

    ALPHA_HOME=... python bench/scoring.py                              # the README's run
    ALPHA_HOME=... python bench/scoring.py --pool 2000 --memory-sizes 2000,8000 --naive 300
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from alpha.config import Settings, load_settings, point_prefect_at
from alpha.images import decode_image
from alpha.kinds import get_kind
from alpha.loop import selection_keep
from alpha.records import LabelRecord, write_record
from alpha.score import Keep, ScoreJob, score_pool
from alpha.store import Store
from alpha.train import LoadedModel, load_model, train_model

LABELS = ["dark", "bright", "striped"]
STRATEGY = "cluster_margin"  # the default strategy: what its selection keeps is measured


def png(label: str, size: int, rng: np.random.Generator) -> bytes:
    noise = rng.integers(0, 40, (size, size))
    if label == "dark":
        pixels = noise
    elif label == "bright":
        pixels = 215 + noise
    else:
        pixels = noise + 215 * (np.arange(size)[:, None] % 2 == 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_config(folder: Path, prefix: str, image_size: int, cache_dir: Path,
                 extra_loop: str = "") -> Path:
    """A config file (Dask workers read their settings from it, as flows' tasks do)."""
    path = folder / f"{prefix}.toml"
    path.write_text(
        f'[s3]\nprefix = "{prefix}"\n[task]\nlabels = {json.dumps(LABELS)}\n'
        f"[train]\nimage_size = {image_size}\nmin_steps = 150\nepochs = 3\n"
        f'[loop]\ncache_dir = "{cache_dir}"\nbatch_size = 100\n{extra_loop}')
    return path


def upload(store: Store, n: int, image_size: int, seed: int) -> float | None:
    """n images under images/pool/; returns images/s of the upload (None: they were
    there already, from a run with --upload-only or --keep)."""
    rng = np.random.default_rng(seed)
    store.ensure_bucket()
    if sum(1 for _ in store.list_images()) == n:
        return None
    items = [(store.image_key(f"pool/{i:07d}.png"), png(LABELS[i % 3], image_size, rng))
             for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda item: store.put_bytes(item[0], item[1], "image/png"), items))
    return n / (time.perf_counter() - start)


def label_some(store: Store, n: int) -> set[str]:
    """Seed labels for the first n images (their pattern is their class)."""
    labeled = set()
    for i in range(n):
        key = store.image_key(f"pool/{i:07d}.png")
        image_id = store.image_id_for(key)
        write_record(store, LabelRecord(image_id=image_id, image_key=key, status="labeled",
                                        label=LABELS[i % 3], source="seed"))
        labeled.add(image_id)
    return labeled


def clear_cache(store: Store, settings: Settings, local: bool = True,
                bucket: bool = True) -> None:
    if bucket:
        delete_prefix(store, "cache/")
    if local and settings.loop.cache_dir:
        shutil.rmtree(Path(settings.loop.cache_dir) / store.bucket / store.prefix,
                      ignore_errors=True)


def delete_prefix(store: Store, sub_prefix: str = "") -> None:
    keys = list(store.list_keys(sub_prefix))
    for start in range(0, len(keys), 1000):
        store.client.delete_objects(Bucket=store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def compute_bound(loaded: LoadedModel, settings: Settings, mc: int, seconds: float = 4.0
                  ) -> float:
    """The model alone: batches of loop.score_batch_size in-memory images, scored by the
    kind as the pool is (reduced to BatchScores), for about `seconds`."""
    kind = get_kind(loaded.kind)
    size = settings.train.image_size
    images = np.random.default_rng(0).random(
        (settings.loop.score_batch_size, 1, size, size), dtype=np.float32)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        kind.score_batch(loaded.model, loaded.temperature, images, settings.task.options,
                         samples=mc)
        done += len(images)
    return done / (time.perf_counter() - start)


def naive(store: Store, loaded: LoadedModel, settings: Settings, n: int) -> float:
    """One GET, one decode, one forward per image, in turn."""
    kind = get_kind(loaded.kind)
    size = settings.train.image_size
    keys = [ref.key for ref, _ in zip(store.list_images(), range(n), strict=False)]
    start = time.perf_counter()
    for key in keys:
        image = decode_image(store.get_bytes(key), key, size, 1)
        kind.score_batch(loaded.model, loaded.temperature, image[None], settings.task.options)
    return len(keys) / (time.perf_counter() - start)


def ours(store: Store, loaded: LoadedModel, settings: Settings, exclude: set[str],
         mc: int = 0, keep: Keep | None = None) -> tuple[float, int]:
    """(images/s, images scored) of alpha's scoring with what the default strategy keeps."""
    start = time.perf_counter()
    scored = score_pool(store, loaded, settings, exclude=exclude, mc_samples=mc,
                        keep=keep or selection_keep(settings, STRATEGY))
    return scored.n_scored / (time.perf_counter() - start), scored.n_scored


def status_mb(field: str) -> float:
    """A /proc/self/status size (VmRSS: now; VmHWM: the peak since the last reset) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(config: Path, model_prefix: str, mc: int, keep_all: bool) -> dict:
    """In a fresh process: score the config's pool with the model of `model_prefix`.

    Peak RSS is measured twice: over the whole process (`getrusage`: imports and the model
    load included) and over the scoring alone (the kernel's peak, VmHWM, reset by writing
    5 to /proc/self/clear_refs once the model is loaded), with the RSS at that moment."""
    settings = load_settings(config)
    store = Store.from_settings(settings)
    model_store = store.with_prefix(model_prefix)
    loaded = load_model(model_store)
    before = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    rate, n = ours(store, loaded, settings, set(), mc=mc, keep=Keep() if keep_all else None)
    return {"images": n, "rate": rate, "rss_before_mb": before,
            "scoring_peak_rss_mb": status_mb("VmHWM"),
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory_run(config: Path, model_prefix: str, mc: int, keep_all: bool = False) -> dict:
    command = [sys.executable, __file__, "--measure-memory", str(config), model_prefix,
               str(mc), "1" if keep_all else "0"]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dask_rates(config: Path, workers: list[int], exclude: set[str]) -> list[dict]:
    """The warm pool scored through flows.score on a LocalCluster of w workers: the whole
    call (cluster start included) and the cluster's start alone."""
    point_prefect_at(load_settings(config))  # before Prefect: report to the stack's server
    from flows.score import dask_scorer, task_runner

    rows = []
    for w in workers:
        settings = load_settings(config, loop={"dask_workers": w})
        store = Store.from_settings(settings)
        loaded = load_model(store)
        start = time.perf_counter()
        with task_runner(settings) as runner:
            runner.client.wait_for_workers(w)  # the runner starts its cluster lazily
        started = time.perf_counter() - start
        job = ScoreJob(exclude=frozenset(exclude), keep=selection_keep(settings, STRATEGY))
        scorer = dask_scorer(str(config), settings)
        start = time.perf_counter()
        scored = scorer(store, loaded, settings, job, None)
        elapsed = time.perf_counter() - start
        rows.append({"workers": w, "images": scored.n_scored, "seconds": elapsed,
                     "cluster_start_s": started, "rate": scored.n_scored / elapsed,
                     "rate_without_start": scored.n_scored / max(elapsed - started, 1e-9)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=10_000, help="the rates' pool")
    parser.add_argument("--memory-sizes", default="10000,100000")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--naive", type=int, default=1000, help="images the naive loop reads")
    parser.add_argument("--mc", type=int, default=20, help="Monte-Carlo samples")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the prefixes")
    parser.add_argument("--run", default=None, help="reuse the prefixes of this run id")
    parser.add_argument("--upload-only", action="store_true",
                        help="upload the pools, keep them and stop (then --run ID)")
    parser.add_argument("--measure-memory", nargs=4, metavar=("CONFIG", "MODEL_PREFIX",
                                                              "MC", "KEEP_ALL"))
    args = parser.parse_args()
    if args.measure_memory:
        config, model_prefix, mc, keep_all = args.measure_memory
        print(json.dumps(measure_memory(Path(config), model_prefix, int(mc),
                                        keep_all == "1")))
        return

    run = args.run or uuid.uuid4().hex[:6]
    folder = Path(tempfile.mkdtemp(prefix="alpha-bench-scoring-"))
    cache_dir = folder / "cache"
    sizes = sorted({args.pool, *(int(s) for s in args.memory_sizes.split(","))})
    configs = {n: write_config(folder, f"bench-scoring-{run}-{n}", args.image_size, cache_dir)
               for n in sizes}
    results: dict = {"run": run, "image_size": args.image_size, "sizes": sizes,
                     "torch_threads": __import__("torch").get_num_threads(),
                     "load_average_at_start": os.getloadavg()}
    stores = {n: Store.from_settings(load_settings(configs[n])) for n in sizes}
    began = time.perf_counter()
    try:
        results["upload"] = {}
        for n in sizes:
            rate = upload(stores[n], n, args.image_size, seed=n)
            results["upload"][n] = rate
            print(f"{n} images: uploaded at {rate or 0:.0f}/s", flush=True)
        if args.upload_only:
            print(f"uploaded; run the bench with --run {run}")
            return
        settings = load_settings(configs[args.pool])
        store = stores[args.pool]
        labeled = label_some(store, 90)
        start = time.perf_counter()
        train_model(store, settings, version="bench")
        results["train_s"] = time.perf_counter() - start
        loaded = load_model(store)

        rates = results["rates"] = {}
        rates["compute_bound"] = compute_bound(loaded, settings, 0)
        rates["compute_bound_mc"] = compute_bound(loaded, settings, args.mc)
        rates["naive"] = naive(store, loaded, settings, args.naive)
        clear_cache(store, settings)
        rates["cold"], _ = ours(store, loaded, settings, labeled)
        rates["warm"], _ = ours(store, loaded, settings, labeled)
        rates["warm_mc"], _ = ours(store, loaded, settings, labeled, mc=args.mc)
        clear_cache(store, settings, bucket=False)
        rates["fresh_machine"], _ = ours(store, loaded, settings, labeled)
        print(json.dumps(rates, indent=1), flush=True)

        largest = max(sizes)
        start = time.perf_counter()
        listed = sum(1 for _ in stores[largest].list_image_etags())
        results["listing_rate"] = listed / (time.perf_counter() - start)
        local = cache_dir / store.bucket / store.prefix
        results["cache_bytes_per_image"] = sum(
            p.stat().st_size for p in local.rglob("*.npz")) / args.pool

        memory = results["memory"] = []
        for n in sizes:
            if n not in (int(s) for s in args.memory_sizes.split(",")):
                continue
            if n != args.pool:  # the rates' pool is warm already
                clear_cache(stores[n], settings)
                memory.append({"pool": n, "cache": "cold", "mc": 0,
                               **memory_run(configs[n], store.prefix, 0)})
            for mc in (0, args.mc):
                memory.append({"pool": n, "cache": "warm", "mc": mc,
                               **memory_run(configs[n], store.prefix, mc)})
            print(json.dumps(memory[-2:]), flush=True)
        largest = max(int(s) for s in args.memory_sizes.split(","))
        memory.append({"pool": largest, "cache": "warm", "mc": 0, "keep": "every row",
                       **memory_run(configs[largest], store.prefix, 0, keep_all=True)})
        print(json.dumps(memory[-1]), flush=True)

        results["dask"] = dask_rates(configs[args.pool],
                                     [int(w) for w in args.workers.split(",")], labeled)
        print(json.dumps(results["dask"], indent=1), flush=True)
    finally:
        results["total_s"] = time.perf_counter() - began
        results["load_average_at_end"] = os.getloadavg()
        if not args.keep and not args.upload_only:
            for n in sizes:
                delete_prefix(stores[n])
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    os._exit(0)  # Dask's and Prefect's background threads need not be waited for


if __name__ == "__main__":
    main()
