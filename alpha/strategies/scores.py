"""What strategies see of a pool: per-image scores, embeddings and predicted classes.

A kind reduces each batch it scores to a `BatchScores` (alpha.kinds.base), so selection
never holds probability maps; strategies read only these arrays, whatever the kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from alpha.strategies.diversity import gradient_embeddings
from alpha.strategies.measures import MEASURES, as_samples, mean_probs

SINGLE_MEASURES = ("least_confidence", "margin", "entropy", "variation_ratio")
"""Measures defined for one prediction per image; `bald` needs Monte-Carlo samples."""


@dataclass
class BatchScores:
    """What selection needs of n images, reduced inside each scored batch.

    scores: measure name -> `(n,)` float64, higher = more uncertain (the Monte-Carlo ones
    only when samples were drawn; a kind may add variants such as "margin:topk").
    embeddings: `(n, d)` float32, for the diversity strategies.
    predicted: `(n,)` int64, one class per image for the class-balance guard.
    confidence: `(n,)` float64 in [0, 1], the model's confidence in its own guess (the task
    score Label Studio's uncertainty sampling orders by: lowest first).
    gradients: `(n, d')` float32, BADGE's gradient embeddings, only when asked for.
    n_classes: how many classes `predicted` ranges over.
    """

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    gradients: np.ndarray | None = None
    n_classes: int | None = None

    def __len__(self) -> int:
        for values in (self.predicted, self.embeddings, *self.scores.values()):
            if values is not None:
                return len(values)
        return 0

    @classmethod
    def from_probs(
        cls, probs: np.ndarray, embeddings: np.ndarray | None = None, *, gradients: bool = False
    ) -> BatchScores:
        """Every measure of class probabilities `(n, classes)` or `(n, classes, T)`
        (`bald` too when T >= 2), the predicted class and its probability, and BADGE's
        gradient embeddings when asked."""
        samples = as_samples(probs)
        names = (*SINGLE_MEASURES, "bald") if samples.shape[2] >= 2 else SINGLE_MEASURES
        mean = mean_probs(probs)
        return cls(
            scores={name: MEASURES[name](probs) for name in names},
            embeddings=embeddings,
            predicted=mean.argmax(axis=1).astype(np.int64),
            confidence=mean.max(axis=1),
            gradients=gradient_embeddings(probs, embeddings) if gradients else None,
            n_classes=int(samples.shape[1]),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[BatchScores]) -> BatchScores:
        """One BatchScores of the batches in order (at least one part)."""
        first = parts[0]

        def joined(name: str) -> np.ndarray | None:
            if getattr(first, name) is None:
                return None
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            scores={name: np.concatenate([p.scores[name] for p in parts]) for name in first.scores},
            embeddings=joined("embeddings"), predicted=joined("predicted"),
            confidence=joined("confidence"), gradients=joined("gradients"),
            n_classes=first.n_classes,
        )

    def take(self, indices: np.ndarray | Sequence[int]) -> BatchScores:
        """The rows `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.intp)

        def rows(values: np.ndarray | None) -> np.ndarray | None:
            return values[idx] if values is not None else None

        return BatchScores(
            scores={name: values[idx] for name, values in self.scores.items()},
            embeddings=rows(self.embeddings), predicted=rows(self.predicted),
            confidence=rows(self.confidence), gradients=rows(self.gradients),
            n_classes=self.n_classes,
        )
