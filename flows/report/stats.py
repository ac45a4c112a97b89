"""The report's significance: is one model really better, or did the test set just happen to favour it?

Two models scored on the same test reviews are not independent samples (most reviews are easy for both),
so every comparison here is *paired*, on the same rows:
- **McNemar's exact test** looks only at the reviews where exactly one of the two models is right (the
  discordant pairs). If both models were equally good, each such review would favour either model with
  probability 1/2, so the count favouring one is Binomial(discordant, 1/2); the p-value is the two-sided
  exact binomial probability of a split at least as lopsided as the one seen.
- **The paired bootstrap** redraws the N test rows with replacement, `report.bootstrap_samples` times,
  the same draw for every model, and recomputes accuracy and macro F1 on each draw. The middle
  (1 - `report.significance`) of those values (95% by default) is the confidence interval: of each model's
  score, and of each pair's difference.

A difference in accuracy is called significant only when both agree (McNemar p < `report.significance`
and the bootstrap interval of the difference excludes 0); a difference in macro F1 when its interval
excludes 0. The draws come from params `seed`, so the same predictions give the same bytes.

Shapes: N test rows, C classes, M models, B bootstrap resamples.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

from reweigh.params import ENSEMBLE, role

CHUNK = 100  # resamples drawn at once: memory is CHUNK x N counts, whatever B is


# ---------------------------------------------------------------- tests and intervals
def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on two models' per-row correctness (N,) bools, same rows in the same order."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return {"only_first_right": only_a, "only_second_right": only_b, "p": min(p, 1.0)}


def class_indicators(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, 3C) 0/1 columns: right and of class c | predicted c | truly c. A resample's counts are weights @ this."""
    classes = np.arange(n_classes)  # (C,)
    predicted = pred[:, None] == classes  # (N, C)
    true = y[:, None] == classes  # (N, C)
    return np.hstack([predicted & true, predicted, true]).astype(np.float64)


def scores_from_counts(counts: np.ndarray, n_classes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 from class counts (..., 3C) of `n` rows.

    F1 of class c = 2 TP / (predicted c + truly c): the harmonic mean of precision and recall, 0 when the class
    is neither predicted nor present (scikit-learn's zero_division=0). Macro F1 averages all C classes."""
    tp, predicted, true = counts[..., :n_classes], counts[..., n_classes:2 * n_classes], counts[..., 2 * n_classes:]
    both = predicted + true
    f1 = np.divide(2 * tp, both, out=np.zeros_like(tp), where=both > 0)  # (..., C)
    return tp.sum(-1) / n, f1.mean(-1)


def bootstrap(y: np.ndarray, preds: dict[str, np.ndarray], n_classes: int, samples: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Accuracy and macro F1 (B,) of every model on B resamples of the test rows: the same resamples for all models.

    A resample is stored as how often each row was drawn (weights, (k, N)), so every count of every model is one
    matrix product; the counts are whole numbers, exact in float64, so the result does not depend on the BLAS."""
    n = len(y)
    if n == 0:
        raise ValueError("bootstrap: no test rows to resample (is the test split empty?)")
    names = list(preds)
    table = np.hstack([class_indicators(y, preds[m], n_classes) for m in names])  # (N, M * 3C)
    rng = np.random.default_rng(seed)
    counts = np.empty((samples, table.shape[1]))  # (B, M * 3C)
    for start in range(0, samples, CHUNK):
        k = min(CHUNK, samples - start)
        rows = rng.integers(0, n, size=(k, n))  # (k, N) row numbers, drawn with replacement
        weights = np.bincount((np.arange(k)[:, None] * n + rows).ravel(), minlength=k * n).reshape(k, n)  # (k, N)
        counts[start:start + k] = weights.astype(np.float64) @ table  # (k, M * 3C)
    per_model = counts.reshape(samples, len(names), 3 * n_classes)  # (B, M, 3C)
    out = {}
    for i, m in enumerate(names):
        accuracy, f1 = scores_from_counts(per_model[:, i], n_classes, n)  # (B,), (B,)
        out[m] = {"accuracy": accuracy, "f1_macro": f1}
    return out


def interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentile interval holding the middle 1 - alpha of bootstrap values (B,)."""
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _r(x: float) -> float:
    return round(float(x), 6)


def model_intervals(boot: dict[str, np.ndarray], alpha: float) -> dict[str, float]:
    """accuracy_ci_low/high and f1_macro_ci_low/high of one model, from its bootstrap values."""
    out = {}
    for key in ("accuracy", "f1_macro"):
        low, high = interval(boot[key], alpha)
        out |= {f"{key}_ci_low": _r(low), f"{key}_ci_high": _r(high)}
    return out


def compare(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, boot_a: dict[str, np.ndarray],
            boot_b: dict[str, np.ndarray], n_classes: int, alpha: float) -> dict[str, float]:
    """Model A minus model B on the same test rows (N,): differences, their intervals, McNemar, verdicts.

    `*_verdict` is 1 when A is significantly better, -1 when significantly worse, 0 when not significant
    (numbers, so that `dvc metrics show` and `dvc metrics diff` can read them)."""
    n = len(y)
    score_a = scores_from_counts(class_indicators(y, pred_a, n_classes).sum(0), n_classes, n)
    score_b = scores_from_counts(class_indicators(y, pred_b, n_classes).sum(0), n_classes, n)
    test = mcnemar_exact(pred_a == y, pred_b == y)
    out: dict[str, float] = {}
    for key, a, b in (("accuracy", score_a[0], score_b[0]), ("f1_macro", score_a[1], score_b[1])):
        low, high = interval(boot_a[key] - boot_b[key], alpha)  # paired: the same resample for both
        out |= {f"{key}_diff": _r(a - b), f"{key}_diff_ci_low": _r(low), f"{key}_diff_ci_high": _r(high)}
    out |= {"mcnemar_p": float(f"{test['p']:.6g}"), "only_first_right": test["only_first_right"],
            "only_second_right": test["only_second_right"]}
    beyond = 1 if out["accuracy_diff_ci_low"] > 0 else -1 if out["accuracy_diff_ci_high"] < 0 else 0
    out["accuracy_verdict"] = beyond if test["p"] < alpha else 0
    out["f1_macro_verdict"] = 1 if out["f1_macro_diff_ci_low"] > 0 else -1 if out["f1_macro_diff_ci_high"] < 0 else 0
    return out


def oriented(comparisons: dict[str, dict[str, float]], a: str, b: str) -> dict[str, float]:
    """The comparison of a against b, whichever way round it was computed (b_vs_a has its signs flipped)."""
    if f"{a}_vs_{b}" in comparisons:
        return comparisons[f"{a}_vs_{b}"]
    c = comparisons[f"{b}_vs_{a}"]
    flipped = {"mcnemar_p": c["mcnemar_p"], "only_first_right": c["only_second_right"], "only_second_right": c["only_first_right"]}
    for key in ("accuracy", "f1_macro"):
        flipped |= {f"{key}_diff": -c[f"{key}_diff"], f"{key}_diff_ci_low": -c[f"{key}_diff_ci_high"],
                    f"{key}_diff_ci_high": -c[f"{key}_diff_ci_low"], f"{key}_verdict": -c[f"{key}_verdict"]}
    return flipped


# ---------------------------------------------------------------- words
def p_text(p: float) -> str:
    """Three significant digits: near the threshold 0.0499 and 0.0501 must not both print as 0.050."""
    return "McNemar p < 0.001" if p < 0.001 else f"McNemar p = {p:.3g}"


def level_text(alpha: float) -> str:
    return f"{1 - alpha:.0%} CI"


def accuracy_text(c: dict[str, float], alpha: float) -> str:
    """"+1.57 points, 95% CI [+0.90, +2.21], McNemar p = 0.003": an accuracy difference in plain figures."""
    return (f"{100 * c['accuracy_diff']:+.2f} points, {level_text(alpha)} [{100 * c['accuracy_diff_ci_low']:+.2f}, "
            f"{100 * c['accuracy_diff_ci_high']:+.2f}], {p_text(c['mcnemar_p'])}")


def f1_text(c: dict[str, float], alpha: float) -> str:
    return (f"{c['f1_macro_diff']:+.4f}, {level_text(alpha)} [{c['f1_macro_diff_ci_low']:+.4f}, "
            f"{c['f1_macro_diff_ci_high']:+.4f}]")


def strongest_baseline(metrics: dict[str, dict[str, Any]], baselines: list[str] | tuple[str, ...]) -> str:
    """The baseline with the best validation accuracy (the first listed on a tie): the bar. Chosen on the
    validation rows, never on test, so that the bar is not picked by the very rows that then judge it."""
    return max(baselines, key=lambda b: metrics[b]["val_accuracy"])


BAR_WHY = ("A neural model costs far more to train and to serve than a linear model on word counts, so it has "
           "earned its place only if it beats the best such model: a win against a weak bar is no win.")
WORDS = {1: "clears", -1: "falls below", 0: "is not significantly different from"}


def verdict(metrics: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, float]], titles: dict[str, str],
            neural: tuple[str, ...], alpha: float) -> list[str]:
    """The report's verdict: a model is called better only when its lead is significant at level `alpha`.

    The baselines are the models of `metrics` that role() calls baselines; each neural model is measured
    against the strongest of them (strongest_baseline), and the ensemble, when there is one, against its
    strongest member (its members are the models it was compared with: `ensemble_vs_<member>`)."""
    ranked = sorted((m for m in metrics if m in titles), key=lambda m: -metrics[m]["accuracy"])
    best, second = ranked[0], ranked[1]
    c = oriented(comparisons, best, second)
    acc = f"{metrics[best]['accuracy']:.2%} test accuracy"
    if c["accuracy_verdict"] > 0:
        lines = [f"**{titles[best]} wins** with {acc}, ahead of {titles[second]} ({metrics[second]['accuracy']:.2%}) by "
                 f"{accuracy_text(c, alpha)}; macro F1 {metrics[best]['f1_macro']:.4f} against {metrics[second]['f1_macro']:.4f}."]
    else:
        lines = [f"**No significant winner**: {titles[best]} has the highest score ({acc}), but its lead over "
                 f"{titles[second]} ({metrics[second]['accuracy']:.2%}) is {accuracy_text(c, alpha)}: not significant "
                 f"at the {100 * alpha:g}% level, so this test set cannot tell the two apart."]
    baselines = [m for m in metrics if role(m) == "baseline"]
    bar = strongest_baseline(metrics, baselines) if baselines else None
    if bar:
        weaker = "; ".join(f"{titles[b]} {metrics[b]['val_accuracy']:.2%}" for b in baselines if b != bar)
        tied = any(metrics[b]["val_accuracy"] == metrics[bar]["val_accuracy"] for b in baselines if b != bar)
        lines.append(f"The bar is **{titles[bar]}, the strongest baseline**: the best validation accuracy of the "
                     f"{len(baselines)} baseline{'s' if len(baselines) > 1 else ''} ({metrics[bar]['val_accuracy']:.2%}"
                     f"{'; ' + weaker if weaker else ''}{'; a tie goes to the first in baseline.models' if tied else ''}), "
                     f"chosen on the validation split, never on test. {BAR_WHY}")
    for m in neural if bar else ():
        c = oriented(comparisons, m, bar)
        lines.append(f"- {titles[m]} {WORDS[c['accuracy_verdict']]} the bar, {titles[bar]}: {accuracy_text(c, alpha)} "
                     f"({metrics[m]['accuracy']:.2%} against {metrics[bar]['accuracy']:.2%}).")
    members = [key.split("_vs_", 1)[1] for key in comparisons if key.startswith(f"{ENSEMBLE}_vs_")]
    if ENSEMBLE in metrics and members:
        top = max(members, key=lambda m: metrics[m]["val_accuracy"])
        c = oriented(comparisons, ENSEMBLE, top)
        lines.append(f"- {titles[ENSEMBLE]} (the mean of {len(members)} models) {WORDS[c['accuracy_verdict']]} its strongest "
                     f"member by validation accuracy, {titles[top]}: {accuracy_text(c, alpha)} "
                     f"({metrics[ENSEMBLE]['accuracy']:.2%} against {metrics[top]['accuracy']:.2%}).")
    for i, b in enumerate(neural):  # every pair of neural models, the later-listed one first
        for a in neural[i + 1:]:
            c = oriented(comparisons, a, b)
            word = {1: "significantly better", -1: "significantly worse", 0: "no significant difference"}[c["accuracy_verdict"]]
            lines.append(f"- {titles[a]} against {titles[b]}: {word} ({accuracy_text(c, alpha)}); "
                         f"{metrics[a]['pr_auc'] - metrics[b]['pr_auc']:+.4f} PR-AUC.")
    return lines


def comparison_markdown(comparisons: dict[str, dict[str, float]], titles: dict[str, str], alpha: float) -> list[str]:
    """The "is the difference real?" table: one row per pair of models, first minus second."""
    md = ["### Is the difference real?", "",
          f"Each pair of models on the same test rows: first minus second. Accuracy differences are in percentage "
          f"points; the {level_text(alpha)} comes from the paired bootstrap (the test rows redrawn with replacement), "
          f"the p-value from McNemar's exact test on the reviews exactly one of the two got right. A difference is "
          f"called significant when p < {alpha:g} and the interval excludes 0 (macro F1: when its interval excludes 0).", "",
          "| pair | accuracy difference | only first right / only second right | macro F1 difference | verdict |",
          "|---|---|---:|---|---|"]
    for key, c in comparisons.items():
        a, b = key.split("_vs_")
        word = {1: f"{titles[a]} better", -1: f"{titles[b]} better", 0: "not significant"}
        md.append(f"| {titles[a]} − {titles[b]} | {accuracy_text(c, alpha)} | {c['only_first_right']:,} / "
                  f"{c['only_second_right']:,} | {f1_text(c, alpha)} | accuracy: {word[c['accuracy_verdict']]}; "
                  f"macro F1: {word[c['f1_macro_verdict']]} |")
    return md + [""]
