"""The demo: a real dataset through the whole loop on the local stack.

Without simulation it ingests a seed set and a pool, runs one round on the Prefect server, and
tells a person where to label. With `simulate_rounds` it closes the loop with the *simulated*
annotator (ground truth from the dataset) and compares alpha's selection with random
selection on the same data, evaluated on the dataset's own test split. `kind` picks the task:
classification (Fashion-MNIST) or semantic segmentation (garments composed into scenes with
exact masks).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from alpha.config import alpha_home
from alpha.datasets import (
    Dataset,
    SegmentationDataset,
    class_subset,
    compose_panoptic_scene_splits,
    compose_scene_splits,
    load_demo_dataset,
    load_stardist_tiles,
    segments,
    write_instance_folder,
    write_png_folder,
    write_segmentation_folder,
)
from alpha.errors import AlphaError
from alpha.history import record_evaluation
from alpha.kinds import get_kind
from alpha.kinds.base import KindOptions, Target
from alpha.store import image_id_from_key
from alpha.strategies import DEFAULT_STRATEGY

TEST_IMAGES = 2000
SCENE_SIZE = (64, 64)  # (width, height) of the composed segmentation scenes
SCENE_TEST_IMAGES = 200


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


@dataclass
class DemoData:
    """A demo dataset written to a folder: what ingest reads (images, and a seed CSV or
    seed masks), the pool's ground truth for the simulated annotator, a test split, and the
    task and training settings it runs with."""

    name: str
    kind: str
    labels: list[str]
    truth: dict[str, str | Target]
    test_images: np.ndarray  # float32 (n, C, H, W) in [0, 1]
    test_targets: np.ndarray  # (n,) class indices or (n, H, W) masks
    seed_csv: Path | None
    seed_masks: Path | None
    settings_toml: str  # the [train] and [loop] sections
    task_options_toml: str = ""  # the [task.options] section, if any


def prepare_demo_data(
    dataset: Dataset, folder: Path, pool_size: int, seed_size: int, random_state: int = 0
) -> dict[str, str]:
    """Write seed + pool images as PNGs and the seed CSV; return the pool's ground truth."""
    rng = np.random.default_rng(random_state)
    chosen = rng.permutation(len(dataset.train_images))[: seed_size + pool_size]
    names = [f"{dataset.name}-{i:05d}.png" for i in chosen]
    write_png_folder(folder / "images", dataset.train_images[chosen], names)
    labels = [dataset.labels[t] for t in dataset.train_targets[chosen]]
    with open(folder / "seed.csv", "w") as handle:
        handle.write("filename,label\n")
        handle.writelines(f"{n},{lab}\n" for n, lab in zip(names[:seed_size], labels[:seed_size],
                                                           strict=True))
    return {image_id_from_key(n): lab for n, lab in
            zip(names[seed_size:], labels[seed_size:], strict=True)}


def classification_demo(folder: Path, pool_size: int, seed_size: int) -> DemoData:
    dataset = load_demo_dataset()
    truth = prepare_demo_data(dataset, folder, pool_size, seed_size)
    return DemoData(
        name=dataset.name, kind="classification", labels=dataset.labels, truth=dict(truth),
        test_images=dataset.test_images[:TEST_IMAGES, None].astype(np.float32) / 255.0,
        test_targets=dataset.test_targets[:TEST_IMAGES], seed_csv=folder / "seed.csv",
        seed_masks=None,
        settings_toml=f"[train]\nimage_size = {dataset.image_size}\nchannels = 1\nepochs = 15\n\n"
                      "[loop]\nbatch_size = 100\n",
    )


def semantic_demo(folder: Path, pool_size: int, seed_size: int) -> DemoData:
    """Fashion-MNIST garments composed on textured backgrounds, with exact masks: the seed
    set's masks are ingested, the pool's are the simulated annotator's ground truth."""
    scenes = compose_scene_splits(seed_size + pool_size, SCENE_TEST_IMAGES, size=SCENE_SIZE)
    names = [f"scene-{i:05d}.png" for i in range(len(scenes))]
    seed = SegmentationDataset(scenes.name, scenes.labels, scenes.images[:seed_size],
                               scenes.masks[:seed_size])
    write_segmentation_folder(folder, seed, names[:seed_size])
    write_png_folder(folder / "images", scenes.images[seed_size:], names[seed_size:])
    truth: dict[str, str | Target] = {
        image_id_from_key(name): Target(mask=mask)
        for name, mask in zip(names[seed_size:], scenes.masks[seed_size:], strict=True)}
    assert scenes.test_images is not None and scenes.test_masks is not None
    width, height = SCENE_SIZE
    return DemoData(
        name="scenes", kind="semantic", labels=scenes.labels, truth=truth,
        test_images=scenes.test_images[:, None].astype(np.float32) / 255.0,
        test_targets=scenes.test_masks.astype(np.int64), seed_csv=None,
        seed_masks=folder / "masks",
        task_options_toml="[task.options]\nuncertainty_map = true\n\n",
        settings_toml=f"[train]\nimage_size = {width}\nimage_height = {height}\nchannels = 1\n"
                      "epochs = 30\nmin_steps = 150\nbatch_size = 16\n\n"
                      "[loop]\nbatch_size = 20\n",
    )


def segment_targets(dataset: SegmentationDataset, test: bool = False) -> list[Target]:
    """The instance or panoptic targets of a dataset's images (or its test split): segment
    ids (`alpha.datasets.segments`; stuff classes as segments where the dataset has stuff)
    and segment lists naming each id's class and whether it is a thing."""
    masks = dataset.test_masks if test else dataset.masks
    instances = dataset.test_instances if test else dataset.instances
    classes = dataset.test_instance_classes if test else dataset.instance_classes
    assert masks is not None and instances is not None and classes is not None
    things = set(dataset.things or [])
    panoptic = "background" not in dataset.labels
    stuff = [i for i, label in enumerate(dataset.labels) if label not in things] \
        if panoptic else None
    out = []
    for mask, ids, by_id in zip(masks, instances, classes, strict=True):
        seg_ids, seg_classes = segments(mask, ids, by_id, stuff)
        out.append(Target(mask=seg_ids, segments=[
            {"id": k, "label": dataset.labels[c], "isthing": dataset.labels[c] in things}
            for k, c in sorted(seg_classes.items())]))
    return out


def _object_demo(kind: str, dataset: SegmentationDataset, folder: Path, pool_size: int,
                 seed_size: int, labels: list[str], task_options_toml: str,
                 settings_toml: str) -> DemoData:
    """Seed masks (segment ids + classes.csv) for the first `seed_size` images, the next
    `pool_size` unlabeled with their targets as the simulated annotator's truth."""
    if seed_size + pool_size > len(dataset):
        raise AlphaError(f"The {dataset.name} data has {len(dataset)} training images: ask for "
                         f"at most that many seed plus pool images (--seed, --pool).")
    names = [f"{dataset.name}-{i:05d}.png" for i in range(len(dataset))]
    chosen = slice(0, seed_size)
    seed = SegmentationDataset(
        dataset.name, dataset.labels, dataset.images[chosen], dataset.masks[chosen],
        things=dataset.things, instances=dataset.instances[chosen],  # type: ignore[index]
        instance_classes=dataset.instance_classes[:seed_size])  # type: ignore[index]
    write_instance_folder(folder, seed, names[:seed_size])
    pool = slice(seed_size, seed_size + pool_size)
    write_png_folder(folder / "images", dataset.images[pool], names[pool])
    kind_module = get_kind(kind)
    truth: dict[str, str | Target] = {
        image_id_from_key(name): target
        for name, target in zip(names[pool], segment_targets(dataset)[pool], strict=True)}
    test = segment_targets(dataset, test=True)
    assert dataset.test_images is not None
    height, width = dataset.test_images.shape[1:3]
    return DemoData(
        name=dataset.name, kind=kind, labels=labels, truth=truth,
        test_images=dataset.test_images[:, None].astype(np.float32) / 255.0,
        test_targets=kind_module.training_targets(test, labels, (width, height)),
        seed_csv=None, seed_masks=folder / "masks", task_options_toml=task_options_toml,
        settings_toml=settings_toml)


def instance_demo(folder: Path, pool_size: int, seed_size: int) -> DemoData:
    """Real nuclei (the PyPI stardist wheel's fluorescence image, in 64 x 64 tiles), one
    object per nucleus."""
    tiles = load_stardist_tiles()
    return _object_demo(
        "instance", tiles, folder, pool_size, seed_size, labels=list(tiles.things or []),
        task_options_toml="", settings_toml="[train]\nchannels = 1\n\n[loop]\nbatch_size = 8\n")


PANOPTIC_GARMENTS = (1, 7, 8)
"""The demo's things, by class index of the garment source: trouser, sneaker and bag in
Fashion-MNIST (1, 7, 8 with digits), shapes that differ; with all ten grey garments the
small model learned the stuff but no object class (bench/README.md)."""


def panoptic_garments() -> Dataset:
    """The garment source of the panoptic demo and benchmark: PANOPTIC_GARMENTS only."""
    source = load_demo_dataset()
    return class_subset(source, [source.labels[i] for i in PANOPTIC_GARMENTS])


def panoptic_demo(folder: Path, pool_size: int, seed_size: int) -> DemoData:
    """Three garments (things) on wall, floor and grass (stuff), composed with exact masks."""
    scenes = compose_panoptic_scene_splits(seed_size + pool_size, SCENE_TEST_IMAGES // 2,
                                           size=SCENE_SIZE, source=panoptic_garments())
    return _object_demo(
        "panoptic", scenes, folder, pool_size, seed_size, labels=list(scenes.labels),
        task_options_toml=f"[task.options]\nthings = {_toml_list(scenes.things or [])}\n\n",
        settings_toml="[train]\nchannels = 1\n\n[loop]\nbatch_size = 20\n")


DEMOS = {"classification": classification_demo, "semantic": semantic_demo,
         "instance": instance_demo, "panoptic": panoptic_demo}
DEFAULT_SIZES = {"classification": (3000, 300), "semantic": (300, 20), "instance": (40, 8),
                 "panoptic": (200, 30)}
"""(pool, seed labels) per kind when the command line gives none."""


def write_demo_config(path: Path, data: DemoData, prefix: str, title: str, strategy: str) -> Path:
    path.write_text(
        f'[s3]\nprefix = "{prefix}"\n\n'
        f"[labelstudio]\nproject_title = {json.dumps(title)}\n\n"
        f'[task]\nkind = "{data.kind}"\nlabels = {_toml_list(data.labels)}\n\n'
        f"{data.task_options_toml}"
        f'{data.settings_toml}strategy = "{strategy}"\n'
    )
    return path


def test_metric(store, data: DemoData, version: str, options: KindOptions | None = None
                ) -> float:
    """The kind's primary metric (accuracy, mean IoU) of a saved model on the dataset's own
    test split (never seen in the loop), read with the task's `options`."""
    from alpha.train import load_model

    loaded = load_model(store, version)
    kind = get_kind(loaded.kind)
    metrics = kind.evaluate(loaded.model, loaded.temperature, data.test_images,
                            data.test_targets, loaded.labels, options)
    return float(metrics[kind.PRIMARY_METRIC])


def _setup_arm(name, data: DemoData, folder, prefix, title, strategy):
    from alpha.config import point_prefect_at
    from alpha.ingest import ingest_folder
    from alpha.loop import open_context

    config = write_demo_config(folder / f"alpha-{name}.toml", data, prefix, title, strategy)
    ctx = open_context(config)
    point_prefect_at(ctx.settings)
    report = ingest_folder(ctx.store, ctx.settings, folder / "images", data.seed_csv,
                           masks=data.seed_masks)
    return config, ctx, report


def run_demo(console: Console, simulate_rounds: int, pool_size: int | None = None,
             seed_size: int | None = None, kind: str = "classification") -> None:
    if kind not in DEMOS:
        raise AlphaError(f"No demo for task kind {kind!r}: choose one of {', '.join(DEMOS)}.")
    default_pool, default_seed = DEFAULT_SIZES[kind]
    pool_size = default_pool if pool_size is None else pool_size
    seed_size = default_seed if seed_size is None else seed_size
    folder = alpha_home() / "demo" / kind
    folder.mkdir(parents=True, exist_ok=True)
    data = DEMOS[kind](folder, pool_size, seed_size)
    metric = get_kind(kind).PRIMARY_METRIC
    console.print(f"dataset: {data.name} ({len(data.labels)} classes, {kind}): {seed_size} seed "
                  f"labels, {pool_size} unlabeled images, folder {folder}", highlight=False)

    if simulate_rounds <= 0:
        config, ctx, report = _setup_arm("demo", data, folder, f"demo-{data.name}",
                                         f"alpha demo: {data.name}", DEFAULT_STRATEGY)
        console.print(report.summary())
        from flows.round import active_learning_round  # only now: _setup_arm points Prefect

        started = time.monotonic()
        summary = active_learning_round(config_file=str(config))
        _print_next_steps(console, ctx, summary, config, time.monotonic() - started)
        return

    from alpha.simulate import simulate_annotations

    run = time.strftime("%Y%m%d-%H%M%S")
    arms = {}
    for strategy in (DEFAULT_STRATEGY, "random"):
        prefix = f"demo-{data.name}-sim-{run}-{strategy}"
        arms[strategy] = _setup_arm(strategy, data, folder, prefix,
                                    f"alpha simulation {run}: {strategy}", strategy)
    from flows.round import active_learning_round  # only now: _setup_arm points Prefect
    results: dict[str, list[tuple[int, float, float | None]]] = {s: [] for s in arms}
    baseline = arms["random"][1].settings.s3.prefix
    for round_number in range(simulate_rounds + 1):
        for strategy, (config, ctx, _) in arms.items():
            summary = active_learning_round(config_file=str(config))
            value = test_metric(ctx.store, data, summary["model"]["version"],
                                ctx.settings.task.options)
            # Kept beside the round, so `alpha report` draws test values and random's beside.
            record_evaluation(ctx.store, summary["round"], metric, value, len(data.test_targets),
                              baseline_prefix=baseline if strategy != "random" else None)
            changed = summary["labels"].get("mean_changed")
            results[strategy].append((summary["labels"]["labeled"], value, changed))
            console.print(f"round {round_number + 1} {strategy}: "
                          f"{summary['labels']['labeled']} labels, test {metric} {value:.3f}"
                          + (f", annotators changed {changed:.1%} of the pre-annotations"
                             if changed is not None else ""), highlight=False)
            if round_number < simulate_rounds:
                simulate_annotations(ctx.project, data.truth, error_rate=0.0,
                                     random_state=round_number)
    table = Table("round", "labels", f"alpha ({DEFAULT_STRATEGY})", "random", "difference",
                  "changed (alpha)",
                  title=f"Test {metric} on {len(data.test_targets)} {data.name} test images "
                        "(labels from the SIMULATED annotator)")
    for number, ((labels, ours, changed), (_, rand, _)) in enumerate(
            zip(results[DEFAULT_STRATEGY], results["random"], strict=True), start=1):
        table.add_row(str(number), str(labels), f"{ours:.3f}", f"{rand:.3f}",
                      f"{ours - rand:+.3f}", "-" if changed is None else f"{changed:.1%}")
    console.print(table)


def _validation(metric: str, value: float | None) -> str:
    """The validation metric, or why there is none (val_fraction = 0, or too few labels
    for a held-out split): never a made-up 0."""
    if value is None:
        return f"validation {metric} not measured: no held-out labels"
    return f"validation {metric} {value:.3f}"


def _print_next_steps(console, ctx, summary, config: Path, seconds: float) -> None:
    from infra.stack import stack_paths

    metric = summary["model"].get("primary_metric", "accuracy")
    creds_file = stack_paths().credentials
    username = json.loads(creds_file.read_text())["ls_username"] if creds_file.is_file() else "?"
    console.print(
        f"\nRound {summary['round']} done in {seconds:.0f} s: model {summary['model']['version']}"
        f" ({_validation(metric, summary['model']['metrics'].get(metric))}), "
        f"{summary['push']['created']} images sent to Label Studio.\n\n"
        f"Label them: {summary['project_url']}\n"
        f"  login: {username}  password: `cat {creds_file}` (field ls_password)\n"
        f"  Each task comes pre-filled with the model's guess; the least certain come first.\n\n"
        f"Then run the next round (pulls your labels, retrains, sends the next batch):\n"
        f"  ALPHA_HOME={alpha_home()} .venv/bin/alpha round --config {config}\n"
        f"Watch the runs: {ctx.settings.prefect.api_url.removesuffix('/api')}/runs\n"
        f"  login: the whole prefect_auth_string in {creds_file}\n"
        f"Stop the stack: .venv/bin/alpha stack down",
        highlight=False,
    )
