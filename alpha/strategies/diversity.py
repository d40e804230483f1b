"""Diversity and hybrid batch selection on embeddings.

Top-k uncertainty fills a batch with near-duplicates: images the model finds hard for the
same reason, so the second of two alike teaches little more than the first. These
strategies spread the batch out: core-set covers the embedding space, BADGE spreads over
gradient embeddings (uncertain and different), and cluster-margin keeps margin's focus on
the decision borders but takes one image per k-means cluster of the most uncertain ones.

scikit-learn is imported in the functions that use it: it takes about 2 s to import, and
every flow run (each pull) and CLI command imports this module through the settings.
"""

from __future__ import annotations

import numpy as np

from alpha.strategies.measures import mean_probs

DEFAULT_CANDIDATES = 10
"""cluster_margin clusters this many times k of the most uncertain images."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties in index order, NaN last."""
    keys = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-keys, kind="stable")[: max(k, 0)].astype(np.intp)


def _unique_fill(picked: np.ndarray, backup: np.ndarray, k: int) -> np.ndarray:
    """`picked` without repeats, topped up to k from `backup` (best first), order kept."""
    seen: set[int] = set()
    out: list[int] = []
    for index in (*picked.tolist(), *backup.tolist()):
        if index not in seen:
            seen.add(index)
            out.append(index)
            if len(out) == k:
                break
    return np.asarray(out, dtype=np.intp)


def _check_embeddings(embeddings: np.ndarray | None, n: int | None = None) -> np.ndarray:
    if embeddings is None:
        raise ValueError(
            "this strategy needs embeddings: pass the (n_images, dim) array that "
            "alpha.kinds.classification.predict returns next to the probabilities."
        )
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or (n is not None and len(embeddings) != n):
        raise ValueError(
            f"embeddings must be (n_images, dim) with one row per image in probs; got shape "
            f"{embeddings.shape} for {n} images."
        )
    return embeddings


def coreset(
    embeddings: np.ndarray,
    k: int,
    labeled_embeddings: np.ndarray | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Greedy k-center (Sener & Savarese 2018): each pick is the image farthest from every
    labeled or already picked image, so the batch covers the pool.

    An image identical to one already picked is at distance 0 and comes last, and a picked
    index is never taken again. Without labeled images the first pick is random.
    """
    from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min
    embeddings = _check_embeddings(embeddings)
    n = len(embeddings)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if labeled_embeddings is not None and len(labeled_embeddings):
        labeled = _check_embeddings(labeled_embeddings)
        _, nearest = pairwise_distances_argmin_min(embeddings, labeled)
        nearest = nearest.astype(np.float64)
    else:
        nearest = np.full(n, np.inf)
        nearest[np.random.default_rng(random_state).integers(n)] = np.finfo(np.float64).max
    picked: list[int] = []
    for _ in range(k):
        index = int(np.argmax(nearest))
        picked.append(index)
        distance = pairwise_distances(embeddings, embeddings[index : index + 1]).ravel()
        nearest = np.minimum(nearest, distance)
        nearest[picked] = -np.inf
    return np.asarray(picked, dtype=np.intp)


def gradient_embeddings(probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """BADGE's hypothetical gradient of the loss w.r.t. the last linear layer, flattened.

    For the predicted label y the gradient is (p - onehot(y)) outer h: its length grows with
    uncertainty and its direction with what the image looks like, so one k-means++ pass
    trades off both.
    """
    probs = mean_probs(probs)
    embeddings = _check_embeddings(embeddings, len(probs))
    residual = probs.copy()
    residual[np.arange(len(probs)), probs.argmax(axis=1)] -= 1.0
    grads = residual.astype(np.float32)[:, :, None] * embeddings[:, None, :]
    return grads.reshape(len(probs), -1)


def badge(grads: np.ndarray, k: int, random_state: int = 0) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings `(n, d')` (see
    `gradient_embeddings`; a kind computes them batch by batch).

    Plain D^2 sampling as in the paper: the first pick is the largest gradient (the most
    uncertain image) and each next one is drawn with probability proportional to its squared
    distance from the nearest pick, so a picked image (distance 0) is never drawn again and
    near-duplicates are unlikely.
    """
    from sklearn.metrics.pairwise import euclidean_distances
    grads = np.asarray(grads, dtype=np.float32)
    n = len(grads)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    rng = np.random.default_rng(random_state)
    norms = np.einsum("ij,ij->i", grads, grads, dtype=np.float64)
    picked = [int(np.argmax(norms))]
    nearest = euclidean_distances(grads, grads[picked], squared=True).ravel().astype(np.float64)
    while len(picked) < k:
        nearest[picked] = 0.0
        total = nearest.sum()
        if not total > 0:  # every image coincides with a pick: nothing new to spread over
            break
        index = int(rng.choice(n, p=nearest / total))
        picked.append(index)
        distance = euclidean_distances(grads, grads[index : index + 1], squared=True).ravel()
        nearest = np.minimum(nearest, distance)
    return _unique_fill(np.asarray(picked, dtype=np.intp), top_k(norms, n), k)


def cluster_margin(
    scores: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    candidates: int = DEFAULT_CANDIDATES,
    random_state: int = 0,
) -> np.ndarray:
    """Margin with k-means diversity (Zhdanov 2019; cf. Citovsky et al. 2021).

    `scores` are the pool's margin scores `(n,)` (higher = closer to a border). Take the
    `candidates * k` images of smallest margin, cluster their embeddings into k
    groups with k-means weighted by uncertainty, and take the image nearest each center:
    every pick is near a decision border, and no two come from the same region. Returned
    most uncertain first.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances
    scores = np.asarray(scores, dtype=np.float64)
    embeddings = _check_embeddings(embeddings, len(scores))
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    pool = top_k(scores, max(k, candidates * k))
    if len(pool) <= k:
        return pool
    points = embeddings[pool]
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=random_state)
    kmeans.fit(points, sample_weight=np.maximum(scores[pool], 1e-12))
    distances = pairwise_distances(kmeans.cluster_centers_, points)
    picked: list[int] = []
    taken = np.zeros(len(pool), dtype=bool)
    for center in np.argsort(distances.min(axis=1), kind="stable"):
        row = np.where(taken, np.inf, distances[center])
        nearest = int(np.argmin(row))
        if not np.isfinite(row[nearest]):
            break
        taken |= (points == points[nearest]).all(axis=1)  # the image and exact copies of it
        picked.append(int(pool[nearest]))
    picked_array = np.asarray(picked, dtype=np.intp)
    picked_array = picked_array[np.argsort(-scores[picked_array], kind="stable")]
    # Fewer than k distinct candidates (a pool of copies): top up by margin, no repeats.
    return _unique_fill(picked_array, pool, k)
