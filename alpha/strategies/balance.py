"""The class-balance guard: a batch must not collapse onto one predicted class.

Uncertainty ranks images near one hard border (shirt vs T-shirt) far above the rest, so a
top-k batch can be mostly one class; a model trained on such labels gets worse at the other
classes, and the next batch drifts further. The guard caps how many images of one predicted
class a batch takes and passes the rest of the ranking through in order.
"""

from __future__ import annotations

import math

import numpy as np


def class_cap(k: int, n_classes: int, slack: float = 2.0) -> int:
    """At most `slack` times a fair share per class: room for the hard classes, no collapse."""
    return max(1, math.ceil(slack * k / max(n_classes, 1)))


def class_balanced(
    order: np.ndarray,
    predicted: np.ndarray,
    k: int,
    max_per_class: int | None = None,
    n_classes: int | None = None,
) -> np.ndarray:
    """The first k of `order` (best first) taking at most `max_per_class` per predicted class.

    `predicted[i]` is the predicted class of pool image i. When the ranking has too few
    classes to fill k under the cap, the batch is topped up from the held-back images in
    their order: a full batch of a lopsided pool beats a short one.
    """
    order = np.asarray(order, dtype=np.intp)
    predicted = np.asarray(predicted)
    k = min(k, order.size)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if n_classes is None:
        n_classes = int(predicted.max()) + 1 if predicted.size else 1
    cap = max_per_class if max_per_class is not None else class_cap(k, n_classes)
    counts: dict[int, int] = {}
    taken: list[int] = []
    held: list[int] = []
    for index in order:
        label = int(predicted[index])
        if counts.get(label, 0) < cap:
            counts[label] = counts.get(label, 0) + 1
            taken.append(int(index))
            if len(taken) == k:
                break
        else:
            held.append(int(index))
    taken += held[: k - len(taken)]
    return np.asarray(taken, dtype=np.intp)
