"""The report's significance (McNemar, paired bootstrap), verdict and per-class numbers, on hand-checkable cases."""
from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from flows.report.classes import per_class_metrics, weakest
from flows.report.stats import CHUNK, bootstrap, compare, mcnemar_exact, model_intervals, oriented, verdict
from reweigh.params import ParamsError, load_params

TITLES = {"gru": "GRU", "gru_attention": "GRU + attention", "tfidf_lr": "TF-IDF + LogReg", "nbsvm": "NB-SVM"}


def correctness(only_a: int, only_b: int, both: int = 5, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-row correctness (N,) of two models with the given discordant counts."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize(("only_a", "only_b", "expected"), [
    # 1 vs 9 discordant: under H0 the count is Binomial(10, 1/2); P(X <= 1) = (C(10,0) + C(10,1)) / 2^10 = 11/1024,
    # two-sided: 22/1024.
    (1, 9, 22 / 1024),
    (9, 1, 22 / 1024),
    # 3 vs 5: P(X <= 3) = (1 + 8 + 28 + 56) / 2^8 = 93/256, two-sided 186/256.
    (3, 5, 186 / 256),
    # 0 vs 6: P(X = 0) = 1/64, two-sided 2/64.
    (0, 6, 2 / 64),
    (5, 5, 1.0),  # a tie is no evidence either way
    (0, 0, 1.0),  # no discordant rows: nothing to test
])
def test_mcnemar_exact_matches_the_binomial_by_hand(only_a, only_b, expected):
    a, b = correctness(only_a, only_b)
    out = mcnemar_exact(a, b)
    assert (out["only_first_right"], out["only_second_right"]) == (only_a, only_b)
    assert out["p"] == pytest.approx(expected, abs=1e-12)


def three_models(n: int = 400, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels (N,) of 2 classes and three models' decisions: perfect, a copy of perfect, right on half the rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    half = np.where(np.arange(n) % 2 == 0, y, 1 - y)
    return y, {"a": y.copy(), "same": y.copy(), "half": half}


def test_bootstrap_difference_of_identical_models_is_exactly_zero():
    y, preds = three_models()
    boot = bootstrap(y, preds, 2, 200, seed=1)
    c = compare(y, preds["a"], preds["same"], boot["a"], boot["same"], 2, 0.05)
    for key in ("accuracy_diff", "accuracy_diff_ci_low", "accuracy_diff_ci_high", "f1_macro_diff_ci_low", "f1_macro_diff_ci_high"):
        assert c[key] == 0, key
    assert c["mcnemar_p"] == 1.0 and c["accuracy_verdict"] == 0 and c["f1_macro_verdict"] == 0


def test_bootstrap_difference_of_a_clearly_better_model_is_clearly_positive():
    y, preds = three_models()
    boot = bootstrap(y, preds, 2, 500, seed=1)
    c = compare(y, preds["a"], preds["half"], boot["a"], boot["half"], 2, 0.05)
    assert c["accuracy_diff"] == 0.5  # 400 right against 200 right
    assert 0.4 < c["accuracy_diff_ci_low"] < 0.5 < c["accuracy_diff_ci_high"] < 0.6
    assert c["only_first_right"] == 200 and c["only_second_right"] == 0 and c["mcnemar_p"] < 1e-50
    assert c["accuracy_verdict"] == 1 and c["f1_macro_verdict"] == 1
    backwards = oriented({"a_vs_half": c}, "half", "a")  # the same pair read the other way round
    assert backwards["accuracy_diff"] == -0.5 and backwards["accuracy_verdict"] == -1
    assert backwards["accuracy_diff_ci_low"] == -c["accuracy_diff_ci_high"] and backwards["only_second_right"] == 200


def test_bootstrap_is_seeded_and_each_resample_matches_scikit_learn():
    y, preds = three_models(n=300)
    preds["noisy"] = np.where(np.arange(300) % 3 == 0, 1 - y, y)
    first = bootstrap(y, preds, 2, 150, seed=7)
    again = bootstrap(y, preds, 2, 150, seed=7)
    other = bootstrap(y, preds, 2, 150, seed=8)
    assert all(np.array_equal(first[m][k], again[m][k]) for m in preds for k in ("accuracy", "f1_macro"))
    assert not np.array_equal(first["half"]["accuracy"], other["half"]["accuracy"])
    # The first resample, redrawn the way bootstrap() draws it, then scored by scikit-learn.
    rows = np.random.default_rng(7).integers(0, 300, size=(min(CHUNK, 150), 300))[0]
    for m in ("half", "noisy"):
        assert first[m]["accuracy"][0] == pytest.approx((preds[m][rows] == y[rows]).mean(), abs=1e-12)
        assert first[m]["f1_macro"][0] == pytest.approx(f1_score(y[rows], preds[m][rows], average="macro"), abs=1e-12)
    ci = model_intervals(first["noisy"], 0.05)
    assert ci["accuracy_ci_low"] < (preds["noisy"] == y).mean() < ci["accuracy_ci_high"]
    assert ci["accuracy_ci_high"] - ci["accuracy_ci_low"] < 0.15  # about ±2 standard errors of 0.027 each


def test_bootstrap_of_25000_rows_and_three_models_is_fast():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 25_000)
    preds = {m: np.where(rng.random(25_000) < acc, y, 1 - y) for m, acc in (("a", 0.9), ("b", 0.89), ("c", 0.87))}
    started = time.perf_counter()
    bootstrap(y, preds, 2, 1000, seed=42)
    assert time.perf_counter() - started < 3.0  # about 0.3 s here; generous for a loaded machine


def test_verdict_calls_a_winner_only_when_the_lead_is_significant_and_measures_against_the_strongest_baseline():
    from flows.report.scores import pairs

    y, preds = three_models()
    three_quarters = np.where(np.arange(len(y)) % 4 == 0, 1 - y, y)
    models = {"gru": preds["a"], "gru_attention": preds["same"], "tfidf_lr": preds["half"], "nbsvm": three_quarters}
    boot = bootstrap(y, models, 2, 300, seed=3)
    comparisons = {f"{a}_vs_{b}": compare(y, models[a], models[b], boot[a], boot[b], 2, 0.05)
                   for a, b in pairs(("gru", "gru_attention"), ("tfidf_lr", "nbsvm"))}
    assert set(comparisons) == {"gru_vs_tfidf_lr", "gru_vs_nbsvm", "gru_attention_vs_tfidf_lr", "gru_attention_vs_nbsvm",
                                "nbsvm_vs_tfidf_lr", "gru_attention_vs_gru"}
    metrics = {m: {"accuracy": float((p == y).mean()), "f1_macro": 0.0, "pr_auc": 0.0, "val_accuracy": 0.9} for m, p in models.items()}
    # NB-SVM scores higher on test (75% against 50%), but TF-IDF on validation: the bar is chosen on validation.
    metrics["tfidf_lr"]["val_accuracy"], metrics["nbsvm"]["val_accuracy"] = 0.6, 0.55
    lines = verdict(metrics, comparisons, TITLES, ("gru", "gru_attention"), 0.05)
    # GRU and GRU + attention tie at the top: no winner, though both beat the bar significantly.
    assert lines[0].startswith("**No significant winner**") and "not significant at the 5% level" in lines[0]
    assert lines[1].startswith("The bar is **TF-IDF + LogReg, the strongest baseline**: the best validation accuracy of the 2 "
                               "baselines (60.00%; NB-SVM 55.00%), chosen on the validation split, never on test.")
    assert "a win against a weak bar is no win" in lines[1]
    assert "- GRU clears the bar, TF-IDF + LogReg: +50.00 points, 95% CI [+" in lines[2] and "McNemar p < 0.001" in lines[2]
    assert "no significant difference (+0.00 points" in lines[4]
    metrics["nbsvm"]["val_accuracy"] = 0.7  # now NB-SVM is the bar
    lines = verdict(metrics, comparisons, TITLES, ("gru", "gru_attention"), 0.05)
    assert "**NB-SVM, the strongest baseline**" in lines[1] and lines[2].startswith("- GRU clears the bar, NB-SVM: +25.00 points")
    # With GRU + attention ranked last, the top two are GRU and NB-SVM: a significant lead, a winner.
    metrics["gru_attention"]["accuracy"] = 0.4
    lines = verdict(metrics, comparisons, TITLES, ("gru", "gru_attention"), 0.05)
    assert lines[0].startswith("**GRU wins** with 100.00% test accuracy, ahead of NB-SVM (75.00%) by +25.00 points, 95% CI")


def test_per_class_metrics_on_a_three_class_example_by_hand():
    labels = ["bad", "meh", "good"]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 0, 1, 1, 0, 2, 2, 1])
    probs = np.full((10, 3), 0.1)
    probs[np.arange(10), pred] = 0.8  # (N, C): 0.8 on the decided class, rows sum to 1
    out = per_class_metrics(y, probs, labels)
    # bad: predicted 5 times, 4 right (P 4/5); all 4 found (R 1); F1 = 2 * 0.8 * 1 / 1.8.
    # meh: predicted 3 times (rows 4, 5, 9), 2 right (P 2/3); 2 of its 3 found (R 2/3); F1 2/3.
    # good: predicted twice, both right (P 1); 2 of 3 found (R 2/3); F1 = 2 * 1 * 2/3 / (5/3) = 0.8.
    expected = {"bad": (0.8, 1.0, 0.888889, 4), "meh": (0.666667, 0.666667, 0.666667, 3), "good": (1.0, 0.666667, 0.8, 3)}
    for name, (p, r, f1, support) in expected.items():
        assert (out[name]["precision"], out[name]["recall"], out[name]["f1"], out[name]["support"]) == (p, r, f1, support)
    # PR-AUC (average precision, one class against the rest): two score levels, 0.8 and 0.1.
    # bad: at 0.8 P 0.8, R 1 → 0.8. meh: at 0.8 P 2/3, R 2/3; at 0.1 P 3/10, R 1 → 4/9 + 1/10. good: 2/3 + 1/3 * 3/10.
    assert out["bad"]["pr_auc"] == 0.8 and out["meh"]["pr_auc"] == 0.544444 and out["good"]["pr_auc"] == 0.766667
    assert weakest(out) == ("meh", 0.666667)
    # The bootstrap's own macro F1 (the full sample) agrees: mean of the three F1s.
    boot = bootstrap(y, {"pred": pred, "truth": y}, 3, 100, seed=0)
    c = compare(y, pred, y, boot["pred"], boot["truth"], 3, 0.05)
    assert c["f1_macro_diff"] == pytest.approx((0.888889 + 2 / 3 + 0.8) / 3 - 1, abs=1e-6)
    assert c["accuracy_diff"] == pytest.approx(-0.2)


@pytest.mark.parametrize(("key", "value", "says"), [("significance", 0.5, "less than or equal to 0.2"),
                                                   ("bootstrap_samples", 10, "greater than or equal to 100")])
def test_report_params_out_of_range_name_the_key(tmp_path, key, value, says):
    path = tmp_path / "params.yaml"
    path.write_text(f"report:\n  {key}: {value}\n")
    with pytest.raises(ParamsError, match=rf"report\.{key}: Input should be {says}; got {value}"):
        load_params(path)


def test_p_values_near_the_threshold_print_apart():
    from flows.report.stats import p_text

    assert p_text(0.0499182) == "McNemar p = 0.0499" and p_text(0.0501) == "McNemar p = 0.0501"
    assert p_text(0.262) == "McNemar p = 0.262" and p_text(0.0004) == "McNemar p < 0.001"
