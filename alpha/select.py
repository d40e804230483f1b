"""Selection strategies: which images go to the annotators next.

Strategies take ids and scores (not models) and return indices into the ids, so a round's
selection is reproducible from what was scored: ties are broken by image id and random
picks take a `random_state`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from alpha.uncertainty import SCORERS, margin

STRATEGIES = (*SCORERS, "random")


def _eligible(image_ids: Sequence[str], exclude: Collection[str]) -> np.ndarray:
    """Indices of ids not excluded (labeled, queued or skipped images are never re-sent)."""
    excluded = set(exclude)
    return np.fromiter(
        (i for i, image_id in enumerate(image_ids) if image_id not in excluded), dtype=np.intp
    )


def select_top_k(
    image_ids: Sequence[str], scores: np.ndarray, k: int, exclude: Collection[str] = ()
) -> list[int]:
    """The k highest-scoring eligible images, best first; equal scores in image id order.

    A NaN score ranks last: a broken prediction should not jump the queue.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(image_ids),):
        raise ValueError(
            f"scores has shape {scores.shape} but there are {len(image_ids)} image ids: "
            "pass one score per image."
        )
    if k <= 0:
        return []
    eligible = _eligible(image_ids, exclude)
    if eligible.size == 0:
        return []
    keys = np.nan_to_num(scores[eligible], nan=-np.inf)
    ids = np.asarray([image_ids[i] for i in eligible], dtype=str)
    order = np.lexsort((ids, -keys))  # last key sorts first: score desc, then id asc
    return eligible[order[:k]].tolist()


def select_random(
    image_ids: Sequence[str], k: int, exclude: Collection[str] = (), random_state: int = 0
) -> list[int]:
    """k eligible images uniformly at random: the baseline every strategy must beat."""
    if k <= 0:
        return []
    eligible = _eligible(image_ids, exclude)
    rng = np.random.default_rng(random_state)
    picked = rng.choice(eligible, size=min(k, eligible.size), replace=False)
    return picked.tolist()


def select(
    strategy: str,
    image_ids: Sequence[str],
    probs: np.ndarray,
    k: int,
    exclude: Collection[str] = (),
    random_state: int = 0,
) -> tuple[list[int], np.ndarray]:
    """Pick k images with `strategy`; return (indices, the score of every image).

    Random selection still returns margin uncertainty as the score, so every pushed task
    carries a score and Label Studio can order the queue either way.
    """
    if strategy == "random":
        scores = margin(probs)
        if scores.shape != (len(image_ids),):
            raise ValueError(
                f"probs has {scores.shape[0]} rows but there are {len(image_ids)} image ids"
            )
        return select_random(image_ids, k, exclude, random_state), scores
    if strategy not in SCORERS:
        raise ValueError(
            f"Unknown selection strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}."
        )
    scores = SCORERS[strategy](probs)
    return select_top_k(image_ids, scores, k, exclude), scores
