"""Label efficiency: does alpha's selection beat random, and by how much?

Replays the active learning loop in-process on real data: a fixed pool and test set, a
random seed set, then rounds of "train from scratch -> score the unlabeled pool -> select a
batch -> reveal the batch's ground-truth labels" (the simulated annotator is the dataset's
own labels; no S3 or Label Studio is involved). Every strategy gets the same pool, seed set,
model, training and budget per seed; random runs beside them, and modAL's and baal's
strategies run as peers on the same models where they exist.

Writes rounds.csv (every seed and round), curves.csv (mean and 95% interval per round),
summary.csv / summary.md (the table), run.json (the command, settings, full-data accuracy,
and the fast vs full MC dropout check with baal's agreement) and curves.png under --out,
and prints the table.

    python bench/label_efficiency.py --dataset digits --quick
    python bench/label_efficiency.py --dataset fashion-mnist --seeds 5 --jobs 2

Peers need the `bench` extra and modAL-python and baal installed without their
dependencies (bench/README.md); a missing peer is skipped with a message.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_STRATEGIES = "random,margin,default,badge,coreset,bald,modal-margin,modal-entropy,baal-bald"
PEERS = ("modal-margin", "modal-entropy", "baal-bald")
# Peers that pick exactly what one of ours picks share its trained models (and cost).
FAMILY = {"modal-margin": "margin", "modal-entropy": "entropy"}

PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(pool=0, initial=30, batch=30, rounds=8, seeds=10),
    "fashion-mnist": dict(pool=10_000, initial=100, batch=100, rounds=8, seeds=5),
}
QUICK: dict[str, dict[str, Any]] = {
    "digits": dict(rounds=4, seeds=3),
    "fashion-mnist": dict(pool=2_000, initial=50, batch=50, rounds=3, seeds=2),
}


@dataclass
class Config:
    """One benchmark run: data, budget, strategies and the training every strategy shares."""

    dataset: str
    strategies: list[str]
    pool: int
    initial: int
    batch: int
    rounds: int
    seeds: int
    full_seeds: int
    mc_samples: int
    cold_start: int | None
    jobs: int
    threads: int
    out: str
    baal_mc: str = "fast"
    seed_set: str = "random"
    mc_check: bool = True
    train: dict[str, Any] = field(default_factory=dict)


# ---- data ---------------------------------------------------------------------------------
def load_data(dataset: str, pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool images, pool targets, test images, test targets), images float32 (n, 1, H, W).

    Scaled to [0, 1] like alpha.images.decode_image, so the model sees what it sees in the
    pipeline. The pool is a fixed random subset of the training split (the same for every
    seed); the test set is the dataset's own.
    """
    from alpha.datasets import load_digits_dataset, load_fashion_mnist

    data = load_digits_dataset() if dataset == "digits" else load_fashion_mnist()
    x, y = data.train_images, data.train_targets
    if pool and pool < len(x):
        keep = np.sort(np.random.default_rng(0).choice(len(x), size=pool, replace=False))
        x, y = x[keep], y[keep]

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0)[:, None]

    return scale(x), y, scale(data.test_images), data.test_targets


# ---- one run ------------------------------------------------------------------------------
def class_names(*targets: np.ndarray) -> list[str]:
    """Names for the class indices the targets use (the kind interface speaks names)."""
    return [str(c) for c in range(int(max(t.max() for t in targets)) + 1)]


def _classification() -> Any:
    """The classification kind, through the registry (its module also has `predict`)."""
    from alpha.kinds import get_kind

    return get_kind("classification")


CLASSIFICATION = _classification()


class Models:
    """Trained models keyed by (seed, labeled set): strategies that label the same images
    get the same model, so shared rounds (the seed set, identical picks) train once."""

    def __init__(self, cfg: Config, data: tuple[np.ndarray, ...]):
        self.cfg, self.data = cfg, data
        self.cache: dict[tuple[int, bytes], tuple[Any, float, float, float]] = {}

    def get(self, seed: int, labeled: np.ndarray) -> tuple[Any, float, float, float]:
        """(model, temperature, test accuracy, training seconds)."""
        from alpha.config import TrainSettings

        labeled = np.sort(labeled)
        key = (seed, labeled.tobytes())
        if key not in self.cache:
            x, y, x_test, y_test = self.data
            settings = TrainSettings(
                image_size=x.shape[2], threads=self.cfg.threads, random_state=seed,
                **self.cfg.train,
            )
            start = time.perf_counter()
            names = class_names(y, y_test)
            trained = CLASSIFICATION.train(x[labeled], y[labeled], names, settings, None)
            seconds = time.perf_counter() - start
            accuracy = CLASSIFICATION.evaluate(
                trained.model, trained.temperature, x_test, y_test, names)["accuracy"]
            self.cache[key] = (trained.model, trained.temperature, accuracy, seconds)
        return self.cache[key]


class _FixedProbs:
    """The estimator interface modAL's query strategies call, over precomputed probabilities
    (row i of X is pool index i), so modAL ranks exactly the model every strategy uses."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 (sklearn's name)
        return self.probs[np.asarray(X).ravel()]


def baal_mc_probs(model: Any, images: np.ndarray, samples: int, temperature: float,
                  random_state: int, batch_size: int = 256) -> np.ndarray:
    """Full-network MC dropout the way baal does it: its MCDropoutModule and ModelWrapper."""
    import torch
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    mc_model = MCDropoutModule(copy.deepcopy(model)).eval()
    wrapper = ModelWrapper(mc_model, TrainingArgs(use_cuda=False, replicate_in_memory=False))
    parts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        for start in range(0, len(images), batch_size):
            logits = wrapper.predict_on_batch(
                torch.from_numpy(images[start:start + batch_size]), iterations=samples
            )
            parts.append(torch.softmax(logits.double() / temperature, dim=1).numpy())
    return np.concatenate(parts)


def choose(strategy: str, model: Any, temperature: float, cfg: Config, pool_x: np.ndarray,
           labeled: np.ndarray, unlabeled: np.ndarray, seed: int, round_: int) -> np.ndarray:
    """Score the pool and pick a batch with `strategy`; returns pool indices."""
    from alpha.kinds.mc import mc_dropout
    from alpha.strategies import DEFAULT_STRATEGY, BatchScores, select_batch

    predict = CLASSIFICATION.predict
    k, state = cfg.batch, seed * 1000 + round_
    if strategy == "random":
        return unlabeled[select_batch("random", k, BatchScores(predicted=unlabeled),
                                      random_state=state)]
    if strategy in ("modal-margin", "modal-entropy"):
        from modAL.uncertainty import entropy_sampling, margin_sampling

        probs, _ = predict(model, pool_x[unlabeled], temperature)
        query = margin_sampling if strategy == "modal-margin" else entropy_sampling
        picked, _ = query(_FixedProbs(probs), np.arange(len(unlabeled))[:, None],
                          n_instances=min(k, len(unlabeled)))
        return unlabeled[np.asarray(picked)]
    if strategy == "baal-bald":
        from baal.active.heuristics import BALD

        if cfg.baal_mc == "full":
            probs = baal_mc_probs(model, pool_x[unlabeled], cfg.mc_samples, temperature, state)
        else:  # the samples our bald scores, so the two rank the same arrays
            probs = mc_dropout(model, pool_x, cfg.mc_samples, temperature,
                               random_state=state)[0][unlabeled]
        return unlabeled[BALD()(probs)[:k]]
    name, _, candidates = strategy.partition(":")
    name, _, scoring = name.partition("@")
    name = DEFAULT_STRATEGY if name == "default" else name
    samples = cfg.mc_samples if name in ("bald", "variation_ratio") or scoring == "mc" else 0
    pool = CLASSIFICATION.score_batch(model, temperature, pool_x, samples=samples,
                                      gradients=name == "badge", random_state=state)
    picked = select_batch(
        name, k, pool.take(unlabeled), pool.embeddings[labeled],
        cold_start_labels=cfg.cold_start if strategy == "default" else 0,
        random_state=state, **({"candidates": int(candidates)} if candidates else {}),
    )
    return unlabeled[picked]


def seed_set(cfg: Config, pool_x: np.ndarray, seed: int) -> np.ndarray:
    """The first labels, shared by every strategy: random, or TypiClust on pixel PCA (the
    cold start alpha offers when there is no model yet)."""
    if cfg.seed_set == "typiclust":
        from alpha.strategies import pixel_embeddings, typiclust

        return typiclust(pixel_embeddings(pool_x, random_state=seed), cfg.initial,
                         random_state=seed)
    return np.random.default_rng(seed).choice(len(pool_x), size=cfg.initial, replace=False)


def run_strategy(strategy: str, seed: int, cfg: Config, models: Models) -> list[dict]:
    """One seed of one strategy: the rows of its learning curve."""
    pool_x = models.data[0]
    n = len(pool_x)
    labeled = seed_set(cfg, pool_x, seed)
    rows = []
    for round_ in range(cfg.rounds + 1):
        model, temperature, accuracy, train_s = models.get(seed, labeled)
        select_s = math.nan
        if round_ < cfg.rounds:
            unlabeled = np.setdiff1d(np.arange(n), labeled)
            start = time.perf_counter()
            picked = choose(strategy, model, temperature, cfg, pool_x, labeled, unlabeled,
                            seed, round_)
            select_s = time.perf_counter() - start
            if len(np.unique(picked)) != len(picked) or np.isin(picked, labeled).any():
                raise RuntimeError(f"{strategy} picked a labeled or repeated image")
        rows.append(dict(dataset=cfg.dataset, strategy=strategy, seed=seed, round=round_,
                         labels=int(len(labeled)), accuracy=accuracy,
                         train_s=round(train_s, 3), select_s=round(select_s, 3)))
        if round_ < cfg.rounds:
            labeled = np.concatenate([labeled, picked])
    return rows


# ---- tasks run in worker processes --------------------------------------------------------
_DATA: tuple[np.ndarray, ...] | None = None


def _init_worker(cfg: Config) -> None:
    import torch

    global _DATA
    torch.set_num_threads(cfg.threads)
    _DATA = load_data(cfg.dataset, cfg.pool)


def _task(args: tuple[str, Config, int, list[str]]) -> tuple[str, Any]:
    kind, cfg, seed, strategies = args
    if kind == "curve":
        models = Models(cfg, _DATA)
        return kind, [row for s in strategies for row in run_strategy(s, seed, cfg, models)]
    if kind == "full":
        x = _DATA[0]
        _, _, accuracy, seconds = Models(cfg, _DATA).get(seed, np.arange(len(x)))
        return kind, dict(seed=seed, accuracy=accuracy, train_s=seconds)
    return kind, mc_check(cfg, _DATA)


def mc_check(cfg: Config, data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    """Fast vs full MC dropout on one model (speed, top-k agreement) and baal agreement.

    The model is the one random selection ends with on seed 0: trained on as many labels as
    the benchmark's final round, so its uncertainty is as informative as it gets here.
    """
    from alpha.kinds.mc import mc_dropout
    from alpha.strategies import bald, entropy, top_k

    predict = CLASSIFICATION.predict
    pool_x = data[0]
    n_final = min(len(pool_x), cfg.initial + cfg.rounds * cfg.batch)
    labeled = np.random.default_rng(0).choice(len(pool_x), size=n_final, replace=False)
    model, temperature, _, _ = Models(cfg, data).get(0, labeled)
    k, t = cfg.batch, cfg.mc_samples

    def timed(fn):
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start

    _, one_pass_s = timed(lambda: predict(model, pool_x, temperature))
    runs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for mode in ("fast", "last", "full"):
        for state in (1, 2):
            (probs, _), s = timed(lambda m=mode, r=state: mc_dropout(
                model, pool_x, t, temperature, mode=m, random_state=r))
            runs[f"{mode}{state}"] = probs
            seconds.setdefault(mode, s)

    def overlap(a: str, b: str) -> int:
        return len(set(top_k(bald(runs[a]), k)) & set(top_k(bald(runs[b]), k)))

    result: dict[str, Any] = dict(
        pool=len(pool_x), labels=int(n_final), samples=t, top_k=k,
        one_pass_s=one_pass_s, fast_s=seconds["fast"], last_s=seconds["last"],
        full_s=seconds["full"], speedup_fast=seconds["full"] / seconds["fast"],
        speedup_last=seconds["full"] / seconds["last"],
        overlap_fast_vs_full=[overlap("fast1", "full2"), overlap("fast2", "full1")],
        overlap_full_vs_full=[overlap("full1", "full2")],
        overlap_fast_vs_fast=[overlap("fast1", "fast2")],
        overlap_last_vs_full=[overlap("last1", "full2"), overlap("last2", "full1")],
    )
    try:
        from baal.active.heuristics import BALD, Entropy

        probs = runs["fast1"]
        result["baal_max_abs_diff_bald"] = float(
            np.abs(BALD().get_uncertainties(probs) - bald(probs)).max())
        result["baal_max_abs_diff_entropy"] = float(
            np.abs(Entropy().get_uncertainties(probs) - entropy(probs)).max())
        (_, baal_s) = timed(lambda: baal_mc_probs(model, pool_x, t, temperature, 1))
        result["baal_full_s"] = baal_s
    except ImportError as error:
        result["baal"] = f"not installed ({error})"
    return result


# ---- statistics ---------------------------------------------------------------------------
def interval(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the half-width of its 95% t-interval over `axis` (seeds)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    half = t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, half


def labels_to_reach(labels: np.ndarray, curve: np.ndarray, target: float) -> float:
    """Labels at which the mean curve first reaches `target`, interpolated between rounds;
    NaN if it never does within the budget."""
    above = np.flatnonzero(curve >= target)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(labels[0])
    x0, x1, y0, y1 = labels[i - 1], labels[i], curve[i - 1], curve[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def summarize(rows: list[dict], full: list[dict]) -> tuple[list[dict], list[dict]]:
    """(curves: mean/CI per strategy and round, summary: one row per strategy)."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})

    def matrix(strategy: str, key: str) -> np.ndarray:
        lookup = {(r["seed"], r["round"]): r[key] for r in rows if r["strategy"] == strategy}
        return np.array([[lookup[s, q] for q in rounds] for s in seeds], dtype=np.float64)

    labels = matrix(strategies[0], "labels")[0]
    span = labels[-1] - labels[0]
    full_accuracy = float(np.mean([f["accuracy"] for f in full])) if full else math.nan
    acc = {s: matrix(s, "accuracy") for s in strategies}
    auc = {s: np.trapezoid(acc[s], labels, axis=1) / span for s in strategies}
    base = "random" if "random" in acc else None
    random_mean = acc[base].mean(axis=0) if base else None

    curves, summary = [], []
    for s in strategies:
        mean, half = interval(acc[s])
        for q, n_labels in enumerate(labels):
            curves.append(dict(strategy=s, round=rounds[q], labels=int(n_labels),
                               mean=mean[q], ci95=half[q], low=mean[q] - half[q],
                               high=mean[q] + half[q]))
        auc_mean, auc_half = interval(auc[s])
        row: dict[str, Any] = dict(strategy=s, seeds=len(seeds), final=mean[-1],
                                   final_ci95=half[-1], auc=auc_mean, auc_ci95=auc_half)
        select_s = matrix(s, "select_s")[:, :-1]
        row["select_s"] = float(np.nanmean(select_s)) if select_s.size else math.nan
        for x in (95, 98):
            row[f"labels_to_{x}"] = labels_to_reach(labels, mean, x / 100 * full_accuracy)
        if base:
            diff_mean, diff_half = interval(auc[s] - auc[base])
            row["auc_vs_random"], row["auc_vs_random_ci95"] = diff_mean, diff_half
            round_mean, round_half = interval(acc[s] - acc[base])
            # After the seed round (shared, so identical): the largest mean deficit.
            row["worst_round_vs_random"] = float(round_mean[1:].min(initial=0.0))
            row["rounds_below_random"] = int(((round_mean + round_half) < 0).sum())
            reach = labels_to_reach(labels, mean, random_mean[-1])
            row["labels_to_random_final"] = reach
            row["ratio_to_random_final"] = reach / labels[-1]
            for x in (95, 98):
                ours, theirs = row[f"labels_to_{x}"], labels_to_reach(
                    labels, random_mean, x / 100 * full_accuracy)
                row[f"ratio_{x}"] = ours / theirs if theirs == theirs else math.nan
        summary.append(row)
    return curves, summary


# ---- output -------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(summary: list[dict], labels_max: int, full_accuracy: float, pool_size: int) -> str:
    """The summary as a Markdown table (what the README and the closing note show)."""
    head = ("| strategy | final acc ± 95% | AUC ± 95% | ΔAUC vs random ± 95% | rounds below "
            "random | labels to random's final (ratio) | labels to 95% (ratio) | labels to "
            "98% (ratio) | select s/round |")
    lines = [head, "|" + "---|" * 9]
    for r in summary:
        def reach(labels: float, ratio: float) -> str:
            if labels != labels:
                return f"> {labels_max}"
            return f"{labels:.0f} ({_fmt(ratio, 2)})"

        lines.append(
            f"| {r['strategy']} | {100 * r['final']:.1f} ± {100 * r['final_ci95']:.1f} "
            f"| {100 * r['auc']:.2f} ± {100 * r['auc_ci95']:.2f} "
            f"| {100 * r.get('auc_vs_random', math.nan):+.2f} ± "
            f"{100 * r.get('auc_vs_random_ci95', math.nan):.2f} "
            f"| {r.get('rounds_below_random', '-')} "
            f"| {reach(r.get('labels_to_random_final', math.nan), r.get('ratio_to_random_final', math.nan))} "  # noqa: E501
            f"| {reach(r['labels_to_95'], r.get('ratio_95', math.nan))} "
            f"| {reach(r['labels_to_98'], r.get('ratio_98', math.nan))} "
            f"| {_fmt(r['select_s'], 2)} |"
        )
    lines.append(f"\nFull-data accuracy (all {pool_size} labels): {100 * full_accuracy:.2f}%; "
                 "95%/98% targets are shares of it. AUC = mean accuracy over the label range.")
    return "\n".join(lines)


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(curves: list[dict], full_accuracy: float, title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'alpha[bench]')")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy in dict.fromkeys(c["strategy"] for c in curves):
        points = [c for c in curves if c["strategy"] == strategy]
        x = [c["labels"] for c in points]
        # Peers dashed: where they pick what ours pick, the two lines coincide.
        ax.plot(x, [c["mean"] for c in points], marker="o", ms=3, label=strategy,
                lw=2.5 if strategy in ("default", "random") else 1.2,
                ls="--" if strategy in PEERS else "-")
        ax.fill_between(x, [c["low"] for c in points], [c["high"] for c in points], alpha=0.15)
    if full_accuracy == full_accuracy:
        for share in (0.95, 0.98):
            ax.axhline(share * full_accuracy, color="grey", ls=":", lw=1)
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (mean, 95% interval)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---- command line -------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> tuple[Config, bool]:
    from alpha.strategies import DEFAULT_COLD_START_LABELS, STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="digits")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated: default, {', '.join(STRATEGIES)}, "
                        f"{', '.join(PEERS)}; add @mc to score with fast MC dropout "
                        "(e.g. margin@mc), :N to cluster N x batch candidates "
                        "(cluster_margin:3) (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a smaller run that takes minutes")
    for name in ("pool", "initial", "batch", "rounds", "seeds"):
        p.add_argument(f"--{name}", type=int, help="default: per dataset")
    p.add_argument("--full-seeds", type=int, default=2,
                   help="trainings on the whole pool for full-data accuracy")
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--cold-start", type=int, default=DEFAULT_COLD_START_LABELS,
                   help="'default' uses typiclust below this many labels (default: alpha's, "
                        "one per class); the other strategies never switch")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--out", default=None, help="default: bench/results/<dataset>")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table, CSVs and plot from --out's rounds.csv and run.json")
    # Training shared by every strategy: alpha.config.TrainSettings, whose defaults (what
    # alpha trains with) apply to every flag not given.
    p.add_argument("--epochs", type=int)
    p.add_argument("--min-steps", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--widths")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction)
    p.add_argument("--refit", action=argparse.BooleanOptionalAction,
                   help="train again on every label after calibrating on the held-out split")
    p.add_argument("--baal-mc", choices=("fast", "full"), default="fast",
                   help="samples baal's BALD ranks: ours (fast MC, the same distribution) or "
                        "baal's own full-network MC dropout (20x the scoring time)")
    p.add_argument("--seed-set", choices=("random", "typiclust"), default="random",
                   help="how the first labels are chosen (the same for every strategy)")
    p.add_argument("--mc-check", action=argparse.BooleanOptionalAction, default=True,
                   help="time fast vs full MC dropout and compare with baal")
    a = p.parse_args(argv)

    sizes = dict(PRESETS[a.dataset])
    if a.quick:
        sizes.update(QUICK[a.dataset])
    for name in sizes:
        if getattr(a, name) is not None:
            sizes[name] = getattr(a, name)
    strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies
               if s.split(":")[0].removesuffix("@mc") not in (*STRATEGIES, *PEERS, "default")]
    if unknown:
        p.error(f"unknown strategies {unknown}")
    strategies = [s for s in strategies if _available(s)]
    train = dict(epochs=a.epochs, min_steps=a.min_steps, learning_rate=a.learning_rate,
                 augment=a.augment, weight_decay=a.weight_decay, refit=a.refit,
                 widths=tuple(int(w) for w in a.widths.split(",")) if a.widths else None)
    train = {name: value for name, value in train.items() if value is not None}
    return Config(dataset=a.dataset, strategies=strategies, full_seeds=a.full_seeds,
                  mc_samples=a.mc_samples, cold_start=a.cold_start, jobs=a.jobs,
                  threads=a.threads, out=a.out or f"bench/results/{a.dataset}", train=train,
                  baal_mc=a.baal_mc, mc_check=a.mc_check, seed_set=a.seed_set,
                  **sizes), a.report_only


def _available(strategy: str) -> bool:
    module = {"modal-margin": "modAL", "modal-entropy": "modAL", "baal-bald": "baal"}.get(
        strategy)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        print(f"skipping peer {strategy}: {module} is not installed (pip install -e "
              "'.[bench]' && pip install --no-deps modAL-python==0.4.2.1 baal==2.1.0)",
              file=sys.stderr)
        return False
    return True


def run(cfg: Config) -> tuple[list[dict], dict[str, Any]]:
    """Every task on cfg.jobs processes: (curve rows, run record with full-data and MC)."""
    family = dict(FAMILY, **({"baal-bald": "bald"} if cfg.baal_mc == "fast" else {}))
    families: dict[str, list[str]] = {}
    for s in cfg.strategies:
        families.setdefault(family.get(s, s), []).append(s)
    tasks: list[tuple[str, Config, int, list[str]]] = [("mc", cfg, 0, [])] if cfg.mc_check else []
    tasks += [("full", cfg, seed, []) for seed in range(cfg.full_seeds)]
    tasks += [("curve", cfg, seed, group) for group in families.values()
              for seed in range(cfg.seeds)]
    print(f"{cfg.dataset}: {len(tasks)} tasks on {cfg.jobs} processes; "
          f"strategies {', '.join(cfg.strategies)}", flush=True)
    started = time.perf_counter()
    rows: list[dict] = []
    full: list[dict] = []
    mc: dict[str, Any] = {}
    with get_context("spawn").Pool(cfg.jobs, _init_worker, (cfg,)) as workers:
        for done, (kind, value) in enumerate(workers.imap_unordered(_task, tasks), 1):
            if kind == "curve":
                rows += value
            elif kind == "full":
                full.append(value)
            else:
                mc = value
            print(f"  {done}/{len(tasks)} tasks, {time.perf_counter() - started:.0f} s",
                  flush=True)
    order = {s: i for i, s in enumerate(cfg.strategies)}
    rows.sort(key=lambda r: (order[r["strategy"]], r["seed"], r["round"]))
    from alpha.config import TrainSettings

    training = TrainSettings(threads=cfg.threads, **cfg.train).model_dump(
        exclude={"image_size", "random_state"})
    record = dict(config=asdict(cfg), training=training,
                  command=" ".join(["python", *sys.argv]),
                  pool_size=len(load_data(cfg.dataset, cfg.pool)[0]), full_data=full,
                  seconds=time.perf_counter() - started, mc_check=mc)
    return rows, record


def report(rows: list[dict], record: dict[str, Any], out: Path) -> None:
    """Write the CSVs, the table and the plot from a run's rows and record, and print."""
    cfg = record["config"]
    curves, summary = summarize(rows, record["full_data"])
    accuracies = [f["accuracy"] for f in record["full_data"]]
    full_accuracy = float(np.mean(accuracies)) if accuracies else math.nan
    labels_max = cfg["initial"] + cfg["rounds"] * cfg["batch"]
    write_csv(out / "rounds.csv", rows)
    write_csv(out / "curves.csv", curves)
    write_csv(out / "summary.csv", summary)
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str))
    text = table(summary, labels_max, full_accuracy, record["pool_size"])
    (out / "summary.md").write_text(text + "\n")
    plot(curves, full_accuracy, f"{cfg['dataset']}: {cfg['seeds']} seeds, {cfg['initial']} "
         f"seed labels + {cfg['rounds']} x {cfg['batch']}", out / "curves.png")
    print(text)
    print(mc_summary(record["mc_check"]))


def _read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("seed", "round", "labels"):
            row[key] = int(row[key])
        for key in ("accuracy", "train_s", "select_s"):
            row[key] = float(row[key])
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg, report_only = parse(argv)
    out = Path(cfg.out)
    if report_only:
        report(_read_rows(out / "rounds.csv"), json.loads((out / "run.json").read_text()), out)
        return
    out.mkdir(parents=True, exist_ok=True)
    rows, record = run(cfg)
    report(rows, record, out)
    print(f"wrote {out}/ in {record['seconds']:.0f} s")


def mc_summary(mc: dict[str, Any]) -> str:
    if not mc:
        return ""
    return (
        f"MC dropout on {mc['pool']} images, T={mc['samples']}: one pass {mc['one_pass_s']:.2f}"
        f" s, fast {mc['fast_s']:.2f} s, full {mc['full_s']:.2f} s -> fast is "
        f"{mc['speedup_fast']:.1f}x faster (last-layer only: {mc['speedup_last']:.1f}x). "
        f"Top-{mc['top_k']} BALD overlap: fast vs full {mc['overlap_fast_vs_full']}, "
        f"full vs full (other dropout seed) {mc['overlap_full_vs_full']}, fast vs fast "
        f"{mc['overlap_fast_vs_fast']}, last-layer vs full {mc['overlap_last_vs_full']}. "
        f"baal agreement (max |diff|): BALD {mc.get('baal_max_abs_diff_bald', '-')}, "
        f"entropy {mc.get('baal_max_abs_diff_entropy', '-')}."
    )


if __name__ == "__main__":
    main()
