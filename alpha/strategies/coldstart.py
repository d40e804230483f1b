"""Cold start: what to label first when there are few or no labels.

A model trained on a handful of labels is unsure about almost everything, so its
uncertainty is mostly noise, and the most uncertain images are often outliers. With few
labels the best first picks are typical images from regions of the data no label covers yet
(TypiClust, Hacohen et al. 2022): they teach the model what each common kind of image looks
like. This needs only embeddings, and without any model, pixels reduced by PCA will do.

scikit-learn is imported in the functions that use it (alpha.strategies.diversity says why).
"""

from __future__ import annotations

import numpy as np


def pixel_embeddings(
    images: np.ndarray, dim: int = 50, random_state: int = 0
) -> np.ndarray:
    """PCA of flattened pixels: an embedding for when no model has been trained yet."""
    from sklearn.decomposition import PCA
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    dim = max(1, min(dim, flat.shape[0], flat.shape[1]))
    return PCA(n_components=dim, random_state=random_state).fit_transform(flat).astype(np.float32)


def typicality(embeddings: np.ndarray, neighbors: int = 20) -> np.ndarray:
    """1 / mean distance to the nearest `neighbors` images: high in dense, common regions."""
    from sklearn.neighbors import NearestNeighbors
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    if n <= 1:
        return np.ones(n)
    n_neighbors = min(neighbors, n - 1)
    # kneighbors() without a query leaves each image out of its own neighbours.
    distances, _ = NearestNeighbors(n_neighbors=n_neighbors).fit(embeddings).kneighbors()
    return 1.0 / (distances.mean(axis=1) + 1e-12)


def typiclust(
    embeddings: np.ndarray,
    k: int,
    labeled_embeddings: np.ndarray | None = None,
    random_state: int = 0,
    neighbors: int = 20,
    max_clusters: int = 500,
) -> np.ndarray:
    """TypiClust: cluster labeled + pool into (labeled + k) groups; from each of the
    largest clusters with the fewest labels, take its most typical image.

    Each pick comes from a different cluster while uncovered clusters remain, so the batch
    rarely takes two alike, and never the same image (or an exact copy of it) twice.
    """
    from sklearn.cluster import KMeans
    pool = np.asarray(embeddings, dtype=np.float32)
    labeled = (
        np.asarray(labeled_embeddings, dtype=np.float32)
        if labeled_embeddings is not None and len(labeled_embeddings)
        else np.empty((0, pool.shape[1]), dtype=np.float32)
    )
    n = len(pool)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    n_clusters = max(1, min(len(labeled) + k, max_clusters, n))
    kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=random_state)
    assignment = kmeans.fit_predict(np.concatenate([pool, labeled]))
    pool_cluster, labeled_cluster = assignment[:n], assignment[n:]
    covered = np.bincount(labeled_cluster, minlength=n_clusters)
    members = [np.flatnonzero(pool_cluster == c) for c in range(n_clusters)]
    # Typicality within each cluster, most typical first (computed once per cluster).
    queues = [
        m[np.argsort(-typicality(pool[m], neighbors), kind="stable")] if m.size else m
        for m in members
    ]
    heads = np.zeros(n_clusters, dtype=np.intp)
    sizes = np.array([m.size for m in members])
    picked: list[int] = []
    seen: set[bytes] = set()  # exact copies of a picked image are never picked again
    while len(picked) < k:
        open_clusters = np.flatnonzero(sizes - heads > 0)
        if open_clusters.size == 0:
            break
        # Fewest labels first, then the largest cluster (most images it would explain).
        best = open_clusters[np.lexsort((-sizes[open_clusters], covered[open_clusters]))[0]]
        index = int(queues[best][heads[best]])
        heads[best] += 1
        if pool[index].tobytes() in seen:
            continue
        seen.add(pool[index].tobytes())
        picked.append(index)
        covered[best] += 1
    return np.asarray(picked, dtype=np.intp)
