"""RAPTOR-style soft clustering of embeddings for the semantic layer.

One level of the recursion: reduce the vectors, fit Gaussian mixtures with the cluster count chosen by
BIC, keep every membership above a threshold (a text can sit in several clusters), first globally, then
locally inside each global cluster. The recursion itself (summarize each cluster, embed the summaries,
cluster again until one remains or five levels) needs the model, so it lives in
:func:`mnemoflow.nodes.comorag.ingest.summarize_semantic`.

Dimensionality reduction is PCA from scikit-learn by default, or the reference's UMAP (cosine metric,
``n_neighbors = min(30, max(5, 0.2 n))``, ``min(10, n - 2)`` dimensions) with ``reduction="umap"``, which needs
the ``umap`` extra (umap-learn and numba, imported only then). Everything is seeded, so the same vectors always give
the same clusters.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from mnemoflow.errors import ConfigError

if TYPE_CHECKING:  # scikit-learn loads when a book is clustered, not when the nodes are registered
    from sklearn.mixture import GaussianMixture  # type: ignore[import-untyped]

__all__ = [
    "MAX_LEVELS",
    "SEED",
    "THRESHOLD",
    "Cluster",
    "Reduction",
    "cluster_level",
    "reduce",
    "require_umap",
    "soft_clusters",
]

SEED = 224
"""The reference code's random seed."""
THRESHOLD = 0.01
"""Soft membership threshold: a member whose probability exceeds it belongs to the cluster."""
MAX_LEVELS = 5
"""Levels of summaries at most."""
MAX_CLUSTERS = 50
REDUCED_DIMENSION = 10

Matrix = NDArray[np.float64]
Reduction = Literal["pca", "umap"]
"""How vectors are reduced before the mixtures: PCA, or the reference's UMAP (the ``umap`` extra)."""
UMAP_MISSING = (
    "reduction 'umap' needs the umap extra, which is not installed: pip install 'mnemoflow[umap]' "
    "(umap-learn, with numba), or use reduction 'pca'"
)


@dataclass(frozen=True)
class Cluster:
    """Members (row indexes of the input) with their membership probability, most probable first."""

    members: tuple[int, ...]
    memberships: tuple[float, ...]


def require_umap() -> None:
    """Raise ``ConfigError`` naming the ``umap`` extra when umap-learn is not installed (checked without importing
    it: numba takes seconds to load), so a run that would reduce with UMAP can stop before its first model call."""
    if importlib.util.find_spec("umap") is None:
        raise ConfigError(UMAP_MISSING)


def _umap(vectors: Matrix, components: int) -> Matrix:
    """The reference's UMAP: cosine metric, ``min(30, max(5, 0.2 n))`` neighbours (at most ``n - 1``), seeded."""
    try:
        from umap import UMAP  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(f"{UMAP_MISSING} ({exc})") from exc
    count = len(vectors)
    neighbours = min(30, max(5, int(0.2 * count)), count - 1)
    reducer = UMAP(n_neighbors=neighbours, n_components=components, metric="cosine", random_state=SEED, n_jobs=1)
    return np.asarray(reducer.fit_transform(vectors), dtype=np.float64)


def reduce(vectors: Matrix, dimension: int = REDUCED_DIMENSION, reduction: Reduction = "pca") -> Matrix:
    """PCA (or UMAP) down to ``min(dimension, n - 2)`` components (at least 1); fewer than three vectors are
    returned centred."""
    count, width = vectors.shape
    components = max(1, min(dimension, count - 2, width))
    if count < 3:
        return np.asarray(vectors - vectors.mean(axis=0), dtype=np.float64)
    if reduction == "umap":
        return _umap(vectors, components)
    from sklearn.decomposition import PCA  # type: ignore[import-untyped]

    reduced = PCA(n_components=components, random_state=SEED).fit_transform(vectors)
    return np.asarray(reduced, dtype=np.float64)


def _best_mixture(points: Matrix, max_clusters: int, seed: int) -> GaussianMixture:
    """The Gaussian mixture whose cluster count, from 1 to ``min(max_clusters, n - 1)``, has the lowest BIC."""
    from sklearn.mixture import GaussianMixture
    best: GaussianMixture | None = None
    best_bic = np.inf
    for count in range(1, max(1, min(max_clusters, len(points) - 1)) + 1):
        mixture = GaussianMixture(n_components=count, random_state=seed, reg_covar=1e-4).fit(points)
        bic = float(mixture.bic(points))
        if bic < best_bic:
            best, best_bic = mixture, bic
    assert best is not None
    return best


def soft_clusters(
    points: Matrix, *, threshold: float = THRESHOLD, max_clusters: int = MAX_CLUSTERS, seed: int = SEED
) -> list[list[tuple[int, float]]]:
    """Soft GMM clusters of ``points``: per cluster, (row, probability) for every probability above ``threshold``.

    Fewer than three points form one cluster. A point that reaches no cluster above the threshold joins
    its most probable one, so every point is covered.
    """
    count = len(points)
    if count < 3:
        return [[(row, 1.0) for row in range(count)]] if count else []
    mixture = _best_mixture(points, max_clusters, seed)
    probabilities = mixture.predict_proba(points)
    clusters: list[list[tuple[int, float]]] = [[] for _ in range(probabilities.shape[1])]
    for row, scores in enumerate(probabilities):
        chosen = [column for column, score in enumerate(scores) if score > threshold] or [int(np.argmax(scores))]
        for column in chosen:
            clusters[column].append((row, float(scores[column])))
    return [cluster for cluster in clusters if cluster]


def cluster_level(
    vectors: Matrix,
    *,
    threshold: float = THRESHOLD,
    max_clusters: int = MAX_CLUSTERS,
    seed: int = SEED,
    reduction: Reduction = "pca",
) -> list[Cluster]:
    """One level of two-stage clustering: global clusters of all vectors, then local clusters inside each.

    Returns clusters ordered by their first member; members are ordered by membership, most probable first.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        return []
    found: dict[tuple[int, ...], Cluster] = {}
    global_points = reduce(vectors, reduction=reduction)
    for global_cluster in soft_clusters(global_points, threshold=threshold, max_clusters=max_clusters, seed=seed):
        rows = [row for row, _ in global_cluster]
        global_score = dict(global_cluster)
        local_points = reduce(vectors[rows], reduction=reduction)
        for local in soft_clusters(local_points, threshold=threshold, max_clusters=max_clusters, seed=seed):
            scored = sorted(
                ((rows[i], global_score[rows[i]] * score) for i, score in local), key=lambda item: (-item[1], item[0])
            )
            members = tuple(row for row, _ in scored)
            key = tuple(sorted(members))
            if key not in found:
                found[key] = Cluster(members, tuple(round(score, 6) for _, score in scored))
    return sorted(found.values(), key=lambda cluster: (min(cluster.members), len(cluster.members)))
