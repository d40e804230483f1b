"""Selection strategies: uncertainty measures, Bayesian MC predictions, diversity and hybrid
batch selection, a class-balance guard and cold start, as pure functions of arrays.

Measures take probabilities `(n, classes)` or `(n, classes, samples)`; strategies take
scores and embeddings (a `BatchScores`) and return indices. `select_batch` is the one entry
point the loop needs; Monte-Carlo samples come from the kinds (alpha.kinds.mc), which own
the models.
"""

from alpha.strategies.balance import class_balanced, class_cap
from alpha.strategies.batch import (
    DEFAULT_COLD_START_LABELS,
    DEFAULT_STRATEGY,
    NEEDS_EMBEDDINGS,
    NEEDS_GRADIENTS,
    NEEDS_SAMPLES,
    STRATEGIES,
    select_batch,
    strategy_measure,
    strategy_score,
)
from alpha.strategies.coldstart import pixel_embeddings, typicality, typiclust
from alpha.strategies.diversity import (
    DEFAULT_CANDIDATES,
    badge,
    cluster_margin,
    coreset,
    gradient_embeddings,
    top_k,
)
from alpha.strategies.measures import (
    MEASURES,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_probs,
    variation_ratio,
)
from alpha.strategies.reductions import REDUCTIONS, inverse_frequency_weights, reduce_map
from alpha.strategies.scores import BatchScores

__all__ = [
    "BatchScores",
    "DEFAULT_CANDIDATES",
    "DEFAULT_COLD_START_LABELS",
    "DEFAULT_STRATEGY",
    "MEASURES",
    "NEEDS_EMBEDDINGS",
    "NEEDS_GRADIENTS",
    "NEEDS_SAMPLES",
    "REDUCTIONS",
    "STRATEGIES",
    "badge",
    "bald",
    "class_balanced",
    "class_cap",
    "cluster_margin",
    "coreset",
    "entropy",
    "gradient_embeddings",
    "inverse_frequency_weights",
    "least_confidence",
    "margin",
    "mean_probs",
    "pixel_embeddings",
    "reduce_map",
    "select_batch",
    "strategy_measure",
    "strategy_score",
    "top_k",
    "typicality",
    "typiclust",
    "variation_ratio",
]
