"""Token embeddings from unlabelled text: positive PMI of windowed co-occurrence, then truncated SVD.

A token is known by the company it keeps. Count, for every pair of token ids, how often they occur within
`window` tokens of each other (nearer pairs count more), turn counts into positive pointwise mutual
information (how much more often than chance), and keep the `dim` strongest directions of that V x V
matrix: each token becomes a dense vector whose cosine to another says how alike their contexts are.
Levy, Goldberg & Dagan (2015) show this matches skip-gram on similarity tasks once skip-gram's tricks
(context-distribution smoothing 0.75, eigenvalue weighting) are applied; here it is also deterministic and
about 10x faster than the skip-gram we measured (docs/benchmarks.md).

Shapes: V vocabulary, D embedding width, N tokens of the corpus (all documents, flat).
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.utils.extmath import randomized_svd

PAD_ID = 0


def cooccurrence(ids: np.ndarray, doc_starts: np.ndarray, vocab_size: int, window: int,
                 chunk: int = 4_000_000) -> sparse.csr_matrix:
    """Symmetric, distance-weighted counts (V, V) of token pairs at most `window` apart in one document.

    `ids` (N,) are all documents one after another; `doc_starts` (n_docs,) where each begins. A pair d
    tokens apart counts (window - d + 1) / window, the expected weight under word2vec's sampled window.
    Read `chunk` tokens at a time, so `ids` may be a file of any length (models/batching.TokenFile, flows/pretrain.py)."""
    boundaries = np.asarray(doc_starts[1:])  # (n_docs - 1,) a token's document: how many of these are <= its position
    total = sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for d in range(1, window + 1):
        weight = (window - d + 1) / window
        for lo in range(0, len(ids) - d, chunk):
            hi = min(lo + chunk, len(ids) - d)
            a, b = np.asarray(ids[lo:hi]), np.asarray(ids[lo + d:hi + d])  # (n,), (n,) tokens d apart
            same_doc = np.searchsorted(boundaries, np.arange(lo, hi), "right") == np.searchsorted(boundaries, np.arange(lo + d, hi + d), "right")
            keep = same_doc & (a != PAD_ID) & (b != PAD_ID)
            a, b = a[keep], b[keep]
            w = np.full(len(a), weight)
            total = total + sparse.coo_matrix((w, (a, b)), shape=(vocab_size, vocab_size)).tocsr()
    return (total + total.T).tocsr()


def token_counts(ids: np.ndarray, vocab_size: int, chunk: int = 4_000_000) -> np.ndarray:
    """How often each token id occurs (V,), counted `chunk` tokens at a time."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for lo in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[lo:lo + chunk]), minlength=vocab_size)[:vocab_size]
    return counts


def ppmi(counts: sparse.csr_matrix, smoothing: float = 0.75) -> sparse.csr_matrix:
    """Positive PMI (V, V): log P(w, c) / (P(w) P_a(c)), negatives set to 0; contexts smoothed by ^`smoothing`."""
    counts = counts.tocoo()
    total = counts.sum()
    row = np.asarray(counts.sum(axis=1)).ravel()  # (V,)
    col = np.asarray(counts.sum(axis=0)).ravel() ** smoothing  # (V,)
    col_p = col / col.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts.data / total) - np.log(row[counts.row] / total) - np.log(col_p[counts.col])
    keep = pmi > 0
    return sparse.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def svd_vectors(matrix: sparse.csr_matrix, dim: int, seed: int, eig_power: float = 0.5) -> np.ndarray:
    """The `dim` leading directions (V, D): U * S^eig_power (0.5 spreads the weight, as Levy et al. advise)."""
    u, s, _ = randomized_svd(matrix, n_components=dim, n_iter=5, random_state=seed)  # (V, D), (D,)
    return (u * s**eig_power).astype(np.float32)  # (V, D)


def ppmi_svd_embeddings(ids: np.ndarray, doc_starts: np.ndarray, vocab_size: int, dim: int, window: int,
                        seed: int, smoothing: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (V, D) scaled to unit standard deviation (the scale of a fresh nn.Embedding), and each
    token's count in the corpus (V,). Tokens never seen get small seeded random vectors; <pad> gets zeros."""
    counts = token_counts(ids, vocab_size)  # (V,)
    rng = np.random.default_rng(seed)
    # A V x V matrix has at most V directions: a tiny vocabulary fills the rest with small noise.
    k = min(dim, vocab_size - 1)
    vectors = np.zeros((vocab_size, dim), dtype=np.float32)  # (V, D)
    vectors[:, :k] = svd_vectors(ppmi(cooccurrence(ids, doc_starts, vocab_size, window), smoothing), k, seed)  # (V, k)
    seen = counts > 0
    seen[PAD_ID] = False
    std = float(vectors[seen, :k].std()) or 1.0
    vectors[:, :k] /= std  # std 1 over seen tokens
    vectors[:, k:] = rng.normal(0.0, 0.1, size=(vocab_size, dim - k))
    unseen = ~seen
    vectors[unseen] = rng.normal(0.0, 0.1, size=(int(unseen.sum()), dim)).astype(np.float32)
    vectors[PAD_ID] = 0.0
    return vectors, counts


def nearest_neighbours(vectors: np.ndarray, query: int, k: int = 8, exclude: tuple[int, ...] = (PAD_ID,)) -> list[tuple[int, float]]:
    """The k token ids whose vectors have the highest cosine to `query`'s, with that cosine, best first."""
    norms = np.linalg.norm(vectors, axis=1)  # (V,)
    cos = vectors @ vectors[query] / np.maximum(norms * norms[query], 1e-12)  # (V,)
    cos[[query, *exclude]] = -np.inf
    top = np.argsort(-cos, kind="stable")[:k]
    return [(int(i), float(cos[i])) for i in top]
