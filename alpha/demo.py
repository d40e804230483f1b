"""The demo: a real dataset through the whole loop on the local stack.

Without simulation it ingests a seed set and a pool, runs one round on the Prefect server, and
tells a person where to label. With `simulate_rounds` it closes the loop with the *simulated*
annotator (ground truth from the dataset) and compares alpha's selection with random
selection on the same data, evaluated on the dataset's own test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from alpha.config import alpha_home
from alpha.datasets import Dataset, load_demo_dataset, write_png_folder
from alpha.kinds import get_kind
from alpha.strategies import DEFAULT_STRATEGY

TEST_IMAGES = 2000


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


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
    from alpha.store import image_id_from_key

    return {image_id_from_key(n): lab for n, lab in
            zip(names[seed_size:], labels[seed_size:], strict=True)}


def write_demo_config(path: Path, dataset: Dataset, prefix: str, title: str, strategy: str) -> Path:
    path.write_text(
        f'[s3]\nprefix = "{prefix}"\n\n'
        f"[labelstudio]\nproject_title = {json.dumps(title)}\n\n"
        f'[task]\nkind = "classification"\nlabels = {_toml_list(dataset.labels)}\n\n'
        f"[train]\nimage_size = {dataset.image_size}\nchannels = 1\nepochs = 15\n\n"
        f'[loop]\nbatch_size = 100\nstrategy = "{strategy}"\n'
    )
    return path


def test_accuracy(store, dataset: Dataset, version: str) -> float:
    """Accuracy of a saved model on the dataset's own test split (never seen in the loop)."""
    from alpha.train import load_model

    loaded = load_model(store, version)
    images = dataset.test_images[:TEST_IMAGES, None].astype(np.float32) / 255.0
    kind = get_kind(loaded.kind)
    metrics = kind.evaluate(loaded.model, loaded.temperature, images,
                            dataset.test_targets[:TEST_IMAGES], loaded.labels)
    return float(metrics[kind.PRIMARY_METRIC])


def _setup_arm(name, dataset, folder, prefix, title, strategy, seed_csv):
    from alpha.config import point_prefect_at
    from alpha.ingest import ingest_folder
    from alpha.loop import open_context

    config = write_demo_config(folder / f"alpha-{name}.toml", dataset, prefix, title, strategy)
    ctx = open_context(config)
    point_prefect_at(ctx.settings)
    report = ingest_folder(ctx.store, ctx.settings, folder / "images", seed_csv)
    return config, ctx, report


def run_demo(console: Console, simulate_rounds: int, pool_size: int, seed_size: int) -> None:
    dataset = load_demo_dataset()
    folder = alpha_home() / "demo" / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    console.print(f"dataset: {dataset.name} ({len(dataset.labels)} classes): {seed_size} seed "
                  f"labels, {pool_size} unlabeled images, folder {folder}", highlight=False)
    truth = prepare_demo_data(dataset, folder, pool_size, seed_size)
    seed_csv = folder / "seed.csv"

    if simulate_rounds <= 0:
        config, ctx, report = _setup_arm("demo", dataset, folder, f"demo-{dataset.name}",
                                         f"alpha demo: {dataset.name}", DEFAULT_STRATEGY, seed_csv)
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
        prefix = f"demo-{dataset.name}-sim-{run}-{strategy}"
        arms[strategy] = _setup_arm(strategy, dataset, folder, prefix,
                                    f"alpha simulation {run}: {strategy}", strategy, seed_csv)
    from flows.round import active_learning_round  # only now: _setup_arm points Prefect
    results: dict[str, list[tuple[int, float]]] = {s: [] for s in arms}
    for round_number in range(simulate_rounds + 1):
        for strategy, (config, ctx, _) in arms.items():
            summary = active_learning_round(config_file=str(config))
            accuracy = test_accuracy(ctx.store, dataset, summary["model"]["version"])
            results[strategy].append((summary["labels"]["labeled"], accuracy))
            console.print(f"round {round_number + 1} {strategy}: "
                          f"{summary['labels']['labeled']} labels, "
                          f"test accuracy {accuracy:.3f}", highlight=False)
            if round_number < simulate_rounds:
                simulate_annotations(ctx.project, truth, error_rate=0.0, random_state=round_number)
    table = Table("round", "labels", f"alpha ({DEFAULT_STRATEGY})", "random", "difference",
                  title=f"Test accuracy on {TEST_IMAGES} {dataset.name} test images "
                        "(labels from the SIMULATED annotator)")
    for number, ((labels, ours), (_, rand)) in enumerate(
            zip(results[DEFAULT_STRATEGY], results["random"], strict=True), start=1):
        table.add_row(str(number), str(labels), f"{ours:.3f}", f"{rand:.3f}",
                      f"{ours - rand:+.3f}")
    console.print(table)


def _print_next_steps(console, ctx, summary, config: Path, seconds: float) -> None:
    from infra.stack import stack_paths

    creds_file = stack_paths().credentials
    username = json.loads(creds_file.read_text())["ls_username"] if creds_file.is_file() else "?"
    console.print(
        f"\nRound {summary['round']} done in {seconds:.0f} s: model {summary['model']['version']}"
        f" (validation accuracy {summary['model']['metrics'].get('accuracy', 0):.3f}), "
        f"{summary['push']['created']} images sent to Label Studio.\n\n"
        f"Label them: {summary['project_url']}\n"
        f"  login: {username}  password: `cat {creds_file}` (field ls_password)\n"
        f"  Each task comes pre-filled with the model's guess; the least certain come first.\n\n"
        f"Then run the next round (pulls your labels, retrains, sends the next batch):\n"
        f"  ALPHA_HOME={alpha_home()} .venv/bin/alpha round --config {config}\n"
        f"Watch the runs: {ctx.settings.prefect.api_url.removesuffix('/api')}/runs\n"
        f"Stop the stack: .venv/bin/alpha stack down",
        highlight=False,
    )
