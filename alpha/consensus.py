"""One label from several annotations of the same image (overlap).

Rule: the majority label wins; a tie goes to the most recent of the tied annotations, since
the later annotator saw the task last. Agreement is the winning label's share of the votes,
stored with the record so a report can show how much annotators agree.

Masks (segmentation) follow the same rule pixel by pixel (`pixel_vote`), with the mean
pairwise IoU between annotators as their agreement (`mask_agreement`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

L = TypeVar("L", bound=Hashable)


@dataclass(frozen=True)
class Consensus(Generic[L]):
    label: L
    index: int  # of the annotation whose label won (the latest one with it)
    agreement: float
    votes: dict[str, int]


def majority_vote(labels: Sequence[L]) -> Consensus[L]:
    """`labels` in time order, oldest first; at least one."""
    if not labels:
        raise ValueError("majority_vote needs at least one label")
    counts = Counter(labels)
    top = max(counts.values())
    index = max(i for i, label in enumerate(labels) if counts[label] == top)
    return Consensus(
        label=labels[index],
        index=index,
        agreement=top / len(labels),
        votes={str(label): count for label, count in sorted(counts.items(), key=str)},
    )


# ---- masks: one class per pixel -----------------------------------------------------------
# The same rule per pixel: among the annotators who labeled a pixel (its value is not
# `ignore`), the class most of them gave wins, a tie going to the most recent of the tied
# annotations; a pixel nobody labeled stays `ignore`. Agreement is the mean IoU between every
# pair of annotators (each pair's IoU averaged over the classes either of them used).


def pixel_vote(masks: Sequence[np.ndarray], ignore: int = 255) -> np.ndarray:
    """The per-pixel majority of class masks `(H, W)` of one image, oldest first (at least
    one, all the same shape); ties go to the latest annotation among the tied classes."""
    if not masks:
        raise ValueError("pixel_vote needs at least one mask")
    stack = np.stack([np.asarray(m) for m in masks])
    if stack.ndim != 3:
        raise ValueError(f"masks must be 2-D (H, W) of one shape, got {stack.shape[1:]}")
    if len(stack) == 1:
        return stack[0].copy()
    classes = [int(c) for c in np.unique(stack) if c != ignore]
    best_score = np.full(stack.shape[1:], -1, dtype=np.int64)
    result = np.full(stack.shape[1:], ignore, dtype=stack.dtype)
    order = np.arange(len(stack)).reshape(-1, 1, 1)
    for c in classes:
        given = stack == c
        count = given.sum(axis=0)
        latest = np.where(given, order, -1).max(axis=0)  # the latest annotation giving c
        # more votes first, then the later annotation: count * (A + 1) + latest is unique
        score = np.where(count > 0, count * (len(stack) + 1) + latest, -1)
        better = score > best_score
        result[better] = c
        best_score[better] = score[better]
    return result


def mask_iou(a: np.ndarray, b: np.ndarray, ignore: int = 255) -> float:
    """Mean IoU of two class masks over the classes either uses (`ignore` is no class: a
    pixel one left unlabelled and the other labeled counts against that class); 1.0 when
    neither labels anything."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} cannot be compared")
    classes = [int(c) for c in np.union1d(np.unique(a), np.unique(b)) if c != ignore]
    if not classes:
        return 1.0
    ious = []
    for c in classes:
        in_a, in_b = a == c, b == c
        ious.append(np.logical_and(in_a, in_b).sum() / np.logical_or(in_a, in_b).sum())
    return float(np.mean(ious))


def mask_agreement(masks: Sequence[np.ndarray], ignore: int = 255) -> float:
    """Mean pairwise `mask_iou` of several annotators' masks of one image (1.0 for one)."""
    pairs = [
        mask_iou(masks[i], masks[j], ignore)
        for i in range(len(masks)) for j in range(i + 1, len(masks))
    ]
    return float(np.mean(pairs)) if pairs else 1.0
