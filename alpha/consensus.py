"""One label from several annotations of the same image (overlap).

Rule: the majority label wins; a tie goes to the most recent of the tied annotations, since
the later annotator saw the task last. Agreement is the winning label's share of the votes,
stored with the record so a report can show how much annotators agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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
