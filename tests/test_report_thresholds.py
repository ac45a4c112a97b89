"""Decision thresholds are chosen on the validation split: the test predictions choose nothing."""
from __future__ import annotations

import numpy as np
import pytest

from flows.report.thresholds import GOALS, choose_thresholds, metrics_entry, threshold_report


def split(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and probabilities (N, C) that lean towards the true class, as a trained model's do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 2.0 * np.eye(n_classes)[y]  # (N, C)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_thresholds_by_hand_on_validation():
    # Scores of the positive class and their truth, ascending: 0.1 (neg), 0.3 (neg), 0.5 (pos), 0.7 (neg), 0.9 (pos).
    # Precision at t = 0.9: 1/1; at 0.7: 1/2; at 0.5: 2/3. The lowest t with precision >= 0.9 is 0.9.
    # Recall at t = 0.5: 2/2; at 0.7: 1/2. The highest t with recall >= 0.9 is 0.5.
    pos = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    val = (np.array([0, 0, 1, 0, 1]), np.stack([1 - pos, pos], 1))
    assert choose_thresholds(val, 0.9, 0.9) == {"target_precision": pytest.approx(0.9), "target_recall": pytest.approx(0.5)}
    test = (np.array([0, 1, 0, 1, 1]), np.stack([1 - pos, pos], 1))
    table = threshold_report(val, test, 0.9, 0.9)
    # On test the positives are the rows scored 0.3, 0.7 and 0.9. The t from validation (0.9) decides only the
    # last row: precision 1/1, recall 1/3. Peeking at test, precision >= 0.9 is first reached at t = 0.7 (rows 0.7
    # and 0.9, both positive; at 0.5 it is 2/3): precision 1, recall 2/3. That gap is what peeking would flatter.
    assert table["target_precision"] == {
        "threshold": 0.9, "val_precision": 1.0, "val_recall": 0.5, "test_precision": 1.0, "test_recall": 0.3333,
        "test_optimal_threshold": 0.7, "test_optimal_precision": 1.0, "test_optimal_recall": 0.6667}


@pytest.mark.parametrize("n_classes", [2, 3])
def test_changing_only_the_test_split_leaves_the_chosen_thresholds_unchanged(n_classes):
    val, test = split(300, n_classes, seed=1), split(500, n_classes, seed=2)
    before = threshold_report(val, test, 0.9, 0.9)
    y_test, probs_test = test
    other_labels = (y_test + 1) % n_classes  # every test label changed
    other_probs = np.roll(probs_test, 1, axis=1)[::-1]  # every test probability moved
    after = threshold_report(val, (other_labels, other_probs), 0.9, 0.9)
    for goal in GOALS:
        chosen = {k: v for k, v in before[goal].items() if k in ("threshold", "val_precision", "val_recall")}
        assert "threshold" in chosen, f"{goal}: the validation split should reach the target here"
        assert {k: after[goal][k] for k in chosen} == chosen, f"{goal}: a threshold chosen on val moved with the test split"
    # The same test split does feed what is reported on test, so this test would notice the two being swapped.
    assert before["rows"] != after["rows"]
    assert any(before[g]["test_precision"] != after[g]["test_precision"] for g in GOALS)
    assert any(before[g].get("test_optimal_threshold") != after[g].get("test_optimal_threshold") for g in GOALS)


def test_a_target_not_reached_on_validation_is_said_and_left_out_of_metrics():
    y, probs = split(200, 2, seed=3)
    noise = (y, np.full_like(probs, 0.5))  # a model that knows nothing: precision stays at the base rate
    table = threshold_report(noise, (y, probs), 0.99, 0.9)
    assert "threshold" not in table["target_precision"] and "test_optimal_threshold" in table["target_precision"]
    assert "threshold" in table["target_recall"]
    entry = metrics_entry(table)
    assert all(isinstance(v, float) for goal in entry.values() for v in goal.values())  # numbers only, for dvc
