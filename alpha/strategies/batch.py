"""One entry point for every strategy: pool scores in, indices of the batch out.

The caller scores the unlabeled pool (a kind's BatchScores: per-image scores per measure,
embeddings, predicted classes, Monte-Carlo measures when the strategy needs them); this
module never sees a model, ids, probabilities or storage, so a selection can be replayed
from what was scored, for every task kind. Indices are into the pool arrays, best first,
never repeated.
"""

from __future__ import annotations

import numpy as np

from alpha.strategies.balance import class_balanced
from alpha.strategies.coldstart import typiclust
from alpha.strategies.diversity import DEFAULT_CANDIDATES, badge, cluster_margin, coreset, top_k
from alpha.strategies.scores import BatchScores

DEFAULT_STRATEGY = "cluster_margin"
"""What alpha uses unless told otherwise: the strategy bench/label_efficiency.py found best."""

DEFAULT_COLD_START_LABELS: int | None = None
"""Below this many labels model-based strategies give way to TypiClust (see coldstart).
None: fewer labels than classes, i.e. before the model can have seen every class once; the
benchmark found uncertainty already beats random from three labels per class."""

UNCERTAINTY = ("least_confidence", "margin", "entropy", "variation_ratio", "bald")
STRATEGIES: tuple[str, ...] = (
    "random",
    *UNCERTAINTY,
    "margin_balanced",
    "coreset",
    "badge",
    "cluster_margin",
    "typiclust",
)
RANDOM_DRAW = "random"
"""A pool's score of a seeded uniform draw per image (alpha.score.random_rank): where it is
present, `random` takes the k highest draws, so a scoring that keeps only candidates (the
top draws among them) selects as if it had kept the whole pool."""
NEEDS_SAMPLES = frozenset({"bald", "variation_ratio"})
"""Strategies whose measure needs Monte-Carlo samples `(n, classes, T)`: BALD is undefined
without them, and variation ratio falls back to least confidence (one sample, one vote)."""
NEEDS_GRADIENTS = frozenset({"badge"})
"""Strategies that read BADGE's gradient embeddings (asked of the kind when scoring)."""
NEEDS_EMBEDDINGS = frozenset({"coreset", "badge", "cluster_margin", "typiclust"})
BALANCED_BY_DEFAULT = frozenset({"margin_balanced", "cluster_margin"})


def strategy_measure(strategy: str) -> str:
    """The measure a strategy ranks by, or margin for strategies that rank by something else
    (diversity, random): the score a selection records and Label Studio orders its queue by."""
    name = strategy.removesuffix("_balanced")
    return name if name in UNCERTAINTY else "margin"


def strategy_score(strategy: str, pool: BatchScores) -> np.ndarray:
    """The pool's `(n,)` score under the strategy's measure (see strategy_measure)."""
    name = strategy_measure(strategy)
    if name not in pool.scores:
        raise ValueError(
            f"strategy {strategy!r} needs the pool's {name!r} scores; the pool has "
            f"{', '.join(pool.scores) or 'none'}"
            + (": score it with Monte-Carlo samples (loop.mc_samples)." if name == "bald"
               else ".")
        )
    return pool.scores[name]


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown selection strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}."
        )


def _ranking(
    strategy: str,
    k: int,
    pool: BatchScores,
    labeled_embeddings: np.ndarray | None,
    random_state: int,
    candidates: int,
) -> np.ndarray:
    """The strategy's own picks, best first; at least k when the pool allows."""
    if strategy in UNCERTAINTY or strategy == "margin_balanced":
        return top_k(strategy_score(strategy, pool), len(pool))
    if strategy == "coreset":
        return coreset(pool.embeddings, k, labeled_embeddings, random_state)
    if strategy == "badge":
        return badge(pool.gradients, k, random_state)
    if strategy == "cluster_margin":
        return cluster_margin(pool.scores["margin"], pool.embeddings, k, candidates, random_state)
    if strategy == "typiclust":
        return typiclust(pool.embeddings, k, labeled_embeddings, random_state)
    raise AssertionError(strategy)  # every name in STRATEGIES is handled above


def select_batch(
    strategy: str,
    k: int,
    pool: BatchScores,
    labeled_embeddings: np.ndarray | None = None,
    *,
    n_labeled: int | None = None,
    cold_start_labels: int | None = DEFAULT_COLD_START_LABELS,
    balance: bool | None = None,
    candidates: int = DEFAULT_CANDIDATES,
    random_state: int = 0,
) -> np.ndarray:
    """Indices of k pool images to label next, best first.

    pool: the unlabeled pool's scores, embeddings `(n, dim)`, predicted classes and (for
    badge) gradient embeddings, as a kind's scoring keeps them; random needs none of them,
    coreset and typiclust only the embeddings; random its seeded draws (RANDOM_DRAW) where
    the pool has them. labeled_embeddings: the labeled images'
    embeddings (coreset and typiclust avoid what is covered). With fewer than
    `cold_start_labels` labels (None: one per class) model-based strategies switch to
    typiclust; the label count is `n_labeled`, else the rows of labeled_embeddings, and
    without either there is no switch. `balance` applies the class-balance guard
    (None: on for strategies that have it built in). `candidates`: cluster-margin clusters
    the `candidates * k` most uncertain images.
    """
    _check_strategy(strategy)
    n = len(pool)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if strategy == "random":
        if RANDOM_DRAW in pool.scores:
            return top_k(pool.scores[RANDOM_DRAW], k)
        return np.random.default_rng(random_state).choice(n, size=k, replace=False).astype(
            np.intp
        )
    if n_labeled is None and labeled_embeddings is not None:
        n_labeled = len(labeled_embeddings)
    if cold_start_labels is None:
        cold_start_labels = pool.n_classes or 1
    if n_labeled is not None and n_labeled < cold_start_labels:
        strategy = "typiclust"
    if strategy in NEEDS_EMBEDDINGS and pool.embeddings is None:
        raise ValueError(f"strategy {strategy!r} needs the pool's embeddings; none were given.")
    if strategy == "badge" and pool.gradients is None:
        raise ValueError(
            "strategy 'badge' needs the pool's gradient embeddings: score it with gradients."
        )
    has_scores = "margin" in pool.scores
    if strategy != "typiclust" and strategy != "coreset" and not has_scores:
        raise ValueError(f"strategy {strategy!r} needs the pool's scores; none were given.")
    if strategy in NEEDS_SAMPLES and strategy not in pool.scores:
        raise ValueError(
            f"strategy {strategy!r} needs Monte-Carlo samples (n, classes, T >= 2): "
            "score the pool with Monte-Carlo dropout (samples >= 2)."
        )
    if balance is None:
        balance = strategy in BALANCED_BY_DEFAULT
    if not balance or not has_scores or pool.predicted is None:
        return _ranking(strategy, k, pool, labeled_embeddings, random_state, candidates)[:k]
    # Greedy diversity strategies pick exactly what they are asked for: ask for more so the
    # guard has room to choose (cluster-margin's k clusters are its design, so not it), then
    # go on through the rest of the pool in margin order.
    wider = k if strategy == "cluster_margin" else min(n, 3 * k)
    ranking = _ranking(strategy, wider, pool, labeled_embeddings, random_state, candidates)
    rest = top_k(pool.scores["margin"], n)
    ranking = np.concatenate([ranking, rest[~np.isin(rest, ranking)]])
    return class_balanced(ranking, pool.predicted, k, n_classes=pool.n_classes)
