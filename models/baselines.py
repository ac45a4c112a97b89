"""The linear baselines: scikit-learn pipelines from text to class probabilities, by the name params.yaml gives them.

- `tfidf_lr`: TF-IDF of uni+bigrams (sublinear tf) and a logistic regression.
- `nbsvm`: Wang & Manning's NB-SVM ("Baselines and Bigrams", ACL 2012): binarised n-gram counts, each
  feature scaled by its naive-Bayes log-count ratio, then a linear classifier (here logistic regression with
  liblinear, as in the reference implementation, so that it has probabilities).

Both are a `Pipeline` of a vectoriser and a classifier that take cleaned text: `fit(texts, y)`,
`predict_proba(texts)` with columns in `classes_` order; they pickle, and `predict` loads either the same way.

Shapes: N documents, V features (n-grams kept), K binary problems (1 for two classes, one per class otherwise).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

WORD = r"(?u)\b\w+\b"  # every word, one-letter ones too ("i loved", "a mess"), as the reference splits on spaces


def log_count_ratio(X: sp.spmatrix, positive: np.ndarray, alpha: float) -> np.ndarray:
    """r = log((p / |p|_1) / (q / |q|_1)), (V,): p = alpha + the feature vectors of the positive rows summed,
    q = alpha + those of the other rows. r > 0: the feature is more frequent in the positive class."""
    p = alpha + np.asarray(X[positive].sum(0), dtype=np.float64).ravel()  # (V,)
    q = alpha + np.asarray(X[~positive].sum(0), dtype=np.float64).ravel()  # (V,)
    return np.log(p / p.sum()) - np.log(q / q.sum())


def interpolate(w: np.ndarray, beta: float) -> np.ndarray:
    """Wang & Manning's interpolation w' = (1 - beta) * mean|w| + beta * w: beta = 1 keeps w as it is; smaller
    beta pulls every weight towards the mean magnitude (their SVM variant used 0.25)."""
    return (1 - beta) * np.abs(w).mean() + beta * w


class NBSVMClassifier(ClassifierMixin, BaseEstimator):
    """NB-SVM on a (binarised) count matrix: x ⊙ r into a linear classifier, one-vs-rest beyond two classes.

    Fitted attributes: classes_ (C,), r_ (K, V) the log-count ratios, coef_ (K, V) the (interpolated) weights
    on x ⊙ r, intercept_ (K,). With two classes K = 1 and it scores classes_[1] against classes_[0]; with more,
    class k against the rest, and the K probabilities are normalised to sum to 1."""

    def __init__(self, alpha: float = 1.0, C: float = 1.0, beta: float = 1.0, max_iter: int = 1000, random_state: int = 0):
        self.alpha = alpha
        self.C = C
        self.beta = beta
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "NBSVMClassifier":
        X = sp.csr_matrix(X, dtype=np.float64)  # (N, V)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"NB-SVM needs at least two classes in the training labels, got {self.classes_.tolist()}")
        targets = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        r, coef, intercept = [], [], []
        for target in targets:
            positive = y == target  # (N,)
            r_k = log_count_ratio(X, positive, self.alpha)  # (V,)
            clf = LogisticRegression(C=self.C, solver="liblinear", max_iter=self.max_iter, random_state=self.random_state)
            clf.fit(X @ sp.diags(r_k), positive.astype(int))  # (N, V) x ⊙ r
            r.append(r_k)
            coef.append(interpolate(clf.coef_.ravel(), self.beta))
            intercept.append(float(clf.intercept_[0]))
        self.r_, self.coef_, self.intercept_ = np.vstack(r), np.vstack(coef), np.array(intercept)  # (K, V), (K, V), (K,)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(N,) for two classes (positive: classes_[1]), else (N, K): (x ⊙ r) · w + b = x · (r ∘ w) + b."""
        check_is_fitted(self, "coef_")
        scores = sp.csr_matrix(X, dtype=np.float64) @ (self.r_ * self.coef_).T + self.intercept_  # (N, K)
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C), columns in classes_ order, rows summing to 1."""
        scores = self.decision_function(X)
        if len(self.classes_) == 2:
            positive = expit(scores)  # (N,)
            return np.column_stack([1 - positive, positive])
        probs = expit(scores)  # (N, K): each class against the rest
        return probs / probs.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def tfidf_lr(cfg: Any, seed: int) -> Pipeline:
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, max_features=cfg.max_features,
                                  sublinear_tf=True, dtype=np.float32)),
        ("logreg", LogisticRegression(C=cfg.C, max_iter=2000, random_state=seed)),
    ])


def nbsvm(cfg: Any, seed: int) -> Pipeline:
    return Pipeline([
        ("counts", CountVectorizer(binary=True, ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df,
                                   max_features=cfg.max_features or None, token_pattern=WORD, dtype=np.float32)),
        ("nbsvm", NBSVMClassifier(alpha=cfg.alpha, C=cfg.C, beta=cfg.beta, random_state=seed)),
    ])


BASELINES = {"tfidf_lr": tfidf_lr, "nbsvm": nbsvm}  # params.yaml baseline.models names these; baseline.<name> configures


def make_baseline(name: str, cfg: Any, seed: int) -> Pipeline:
    """The unfitted pipeline of baseline `name` from its params.yaml section `baseline.<name>`."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](cfg, seed)


def describe(pipe: Pipeline) -> dict[str, int]:
    """features (n-grams kept) and parameters (weights + biases; NB-SVM's r counted too) of a fitted pipeline."""
    vectoriser, clf = pipe.steps[0][1], pipe.steps[-1][1]
    extra = clf.r_.size if isinstance(clf, NBSVMClassifier) else 0
    return {"features": len(vectoriser.vocabulary_), "parameters": int(clf.coef_.size + clf.intercept_.size + extra)}
