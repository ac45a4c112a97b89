"""report: every model's predictions side by side: metrics, `dvc plots` data, PNG figures, a readable report.

The models are params' model_set(): train.models, then baseline.models (the bars), then the ensemble when
there is one. The verdict measures each neural model against the strongest baseline (best validation
accuracy) and the ensemble against its members (flows/report/stats.py, flows/report/ensemble.py).

Each model's data/predictions/<model>.parquet holds its validation and test rows (column `split`). Every
score is on the test split; the validation rows only choose the decision thresholds (flows/report/thresholds.py).

Writes
- reports/metrics.json: per model accuracy, macro precision/recall/F1, ROC-AUC, PR-AUC (average precision),
  bootstrap confidence intervals of accuracy and macro F1, per-class results (`per_class`), the thresholds
  (`thresholds`), parameters, epochs; and `comparisons`: each pair of models, paired tests on the same test
  rows (flows/report/stats.py). Only deterministic numbers, only numbers as leaves: same params + seed → the
  same bytes, so `dvc metrics diff` shows real changes only. Wall-clock training time goes to
  reports/timings.json (also a DVC metrics file).
- reports/plots/: confusion/<model>.csv (actual, predicted), pr/<model>.csv (recall, precision, threshold),
  pr_per_class/<model>.csv (class, recall, precision, threshold); the `plots:` section of dvc.yaml draws all
  but the per-class curves, and each neural model's per-epoch curves from its train stage's DVCLive log.
- reports/figures/*.png (matplotlib, Agg) and reports/report.md, which links them.
- reports/embeddings.json and the report's "semantic vector space" section (flows/report/embeddings.py).

Binary tasks score the second class (`labels[1]`, e.g. pos) as the positive one; with more classes the
precision-recall curve and threshold table are micro-averaged one-vs-rest and PR-AUC / ROC-AUC are macro;
the per-class section (flows/report/classes.py) shows each class on its own.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from flows.report import classes as report_classes, ensemble as report_ensemble  # noqa: E402
from flows.report import models as report_models, stats as report_stats, thresholds as report_thresholds  # noqa: E402
from flows.common import REPORTS, params, read_dataset_info  # noqa: E402
from flows.report.embeddings import embedding_space, section_markdown  # noqa: E402
from flows.report.models import COLORS, TITLES  # noqa: E402
from flows.report.scores import load_predictions, operating_point, pr_points, score_models  # noqa: E402
from reweigh.io import atomic_path, write_json, write_text  # noqa: E402
from reweigh.machine import one_line  # noqa: E402
from reweigh.params import ENSEMBLE, role  # noqa: E402
PLOTS, FIGURES = REPORTS / "plots", REPORTS / "figures"
METRICS, TIMINGS, REPORT = REPORTS / "metrics.json", REPORTS / "timings.json", REPORTS / "report.md"


# ---------------------------------------------------------------- figures
def _save(fig: plt.Figure, name: str) -> str:
    path = FIGURES / name
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}"


def fig_confusion(name: str, y: np.ndarray, pred: np.ndarray, labels: list[str]) -> str:
    cm = confusion_matrix(y, pred, labels=list(range(len(labels))))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = 3.2 + 0.35 * len(labels)
    shown = [report_classes.plain(label) for label in labels]  # "$" in a class name: literal, not mathtext
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), layout="constrained")
    for ax, mat, title, fmt, top in ((axes[0], cm, "counts", "{:,.0f}", None), (axes[1], norm, "row-normalised (recall per class)", "{:.1%}", 1.0)):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=top)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=shown, yticklabels=shown,
               xlabel="predicted", ylabel="actual", title=title)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center",
                        color="white" if mat[i, j] > (top or mat.max()) * 0.6 else "black", fontsize=11)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{TITLES[name]}: confusion matrix on the test split ({len(y):,} reviews)")
    return _save(fig, f"confusion_{name}.png")


def fig_pr(curves: dict[str, tuple[pl.DataFrame, tuple[float, float], float]], positive: str, target_p: float) -> str:
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name, (pts, (r, p), ap) in curves.items():
        ax.plot(pts["recall"], pts["precision"], color=COLORS[name], label=f"{TITLES[name]} (AP {ap:.3f})")
        ax.plot([r], [p], "o", color=COLORS[name], markersize=8, markeredgecolor="black")
    ax.plot([], [], "o", color="white", markeredgecolor="black", label="operating point (argmax, t = 0.5)")
    ax.axhline(target_p, color="black", linestyle=":", linewidth=1, label=f"target precision {target_p:.0%}")
    lo = min(float(pts["precision"].min()) for pts, _, _ in curves.values())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(max(0.0, lo - 0.02), 1.005),
           title=f"Precision-recall on the test split ({report_classes.plain(positive)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, "pr_curves.png")


def fig_training(histories: dict[str, list[dict]]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
            ax.plot(epochs, [h[f"train_{key}"] for h in hist], "--o", color=COLORS[name], label=f"{TITLES[name]} train")
            ax.plot(epochs, [h[f"val_{key}"] for h in hist], "-o", color=COLORS[name], label=f"{TITLES[name]} val")
    for ax, key in ((axes[0], "cross-entropy loss"), (axes[1], "accuracy")):
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, "training_curves.png")


# ---------------------------------------------------------------- the report
def stop_lines(summaries: dict[str, dict], neural: tuple[str, ...]) -> list[str]:
    """How each neural model's embedding started and why its training ended (older summaries lack both)."""
    return [f"- **{TITLES[m]}**: started from {summaries[m].get('init', 'a random init (not recorded)')}; stopped by "
            f"{summaries[m].get('stop_reason', 'not recorded (retrain to see why)')}." for m in neural]


def markdown_report(info: dict, metrics: dict, timings: dict, figs: dict, parts: dict[str, list[str]], positive: str,
                    alpha: float) -> str:
    """reports/report.md; `parts` holds the sections other modules write: verdict, comparisons, thresholds,
    per_class, stops, embeddings, attention, shapes."""
    cols = list(metrics)
    ci = report_stats.level_text(alpha)
    md = ["# reweigh: model comparison", "",
          f"Dataset `{info.get('title') or info['name']}`: classes {', '.join(info['labels'])}; rows per split "
          + ", ".join(f"{k} {v:,}" for k, v in info.get("rows", {}).items()) + ". All scores are on the test split, "
          "which no model saw while training or early stopping; in this report the validation split serves only to choose "
          "the decision thresholds, the strongest baseline and (with `ensemble.weights: val`) the ensemble's weights.", "",
          "## Verdict", "", *parts["verdict"], "",
          "## Metrics", "", "| metric | " + " | ".join(TITLES[m] for m in cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, label, fmt in (("accuracy", "accuracy", "{:.4f}"), ("accuracy_ci", f"accuracy, {ci}", None),
                            ("val_accuracy", "validation accuracy", "{:.4f}"),
                            ("precision_macro", "precision (macro)", "{:.4f}"), ("recall_macro", "recall (macro)", "{:.4f}"),
                            ("f1_macro", "F1 (macro)", "{:.4f}"), ("f1_macro_ci", f"F1 (macro), {ci}", None),
                            ("roc_auc", "ROC-AUC", "{:.4f}"), ("pr_auc", "PR-AUC (average precision)", "{:.4f}"),
                            ("parameters", "parameters", "{:,}"), ("epochs", "epochs run", "{}"), ("best_epoch", "best epoch", "{}")):
        md.append(f"| {label} | " + " | ".join(
            fmt.format(metrics[m][key]) if fmt else f"[{metrics[m][key + '_low']:.4f}, {metrics[m][key + '_high']:.4f}]"
            for m in cols) + " |")
    md.append("| training time (s) | " + " | ".join(f"{timings[m]['train_seconds']:.0f}" for m in cols) + " |")
    md += ["", f"The {ci} (confidence interval) of a score is the range it covers when the test reviews are redrawn "
           "with replacement: a test set of other reviews from the same source would likely score inside it. "
           "Training time is wall-clock on the machine that ran the stage"
           + (f" ({'; '.join(parts['machines'])})" if parts.get("machines") else "")
           + "; it lives in `reports/timings.json`, not `metrics.json`, so that the same params and seed give "
           "byte-identical metrics on that machine. Another CPU can change the neural models' weights and the last "
           "digits of their scores (docs/design.md, \"Reproducible where\").", "",
           *parts["comparisons"], *parts.get("ensemble", []),
           "### How each model started and why it stopped", "", *parts["stops"], "",
           *parts["per_class"], "## Confusion matrices", ""]
    md += [f"![{TITLES[m]} confusion]({figs['confusion'][m]})" for m in cols]
    md += ["", "## Precision-recall", "", f"Positive class: {positive}. Dots: each model's operating point.", "",
           f"![precision-recall curves]({figs['pr']})", "", *parts["thresholds"],
           f"![threshold table]({figs['thresholds']})", "", "## Training curves", "", f"![training curves]({figs['training']})", "",
           "How the test error of every model falls with more labelled examples, fitted with a power law, and where "
           "the neural models overtake the linear ones: [scaling.md](scaling.md), written by `reweigh scaling` "
           "(docs/scaling.md) from a DVC experiment per labelled size.", "",
           *parts["embeddings"], *parts["attention"], *parts["shapes"]]
    return "\n".join(md)


def write_plot_data(preds: dict, summaries: dict, metrics: dict, labels: list[str], target_p: float, positive: str) -> dict:
    """CSVs under reports/plots/ and the PR, confusion, per-class and training figures; returns the figures' paths."""
    curves, class_points, figs = {}, {}, {"confusion": {}}
    models = tuple(preds)
    neural = tuple(m for m in models if role(m) == "neural")
    for m in models:
        y, probs, _ = preds[m]["test"]
        pred = probs.argmax(1)
        pts = pr_points(y, probs)
        curves[m] = (pts, operating_point(y, probs), metrics[m]["pr_auc"])
        class_points[m] = report_classes.class_pr_points(y, probs, labels)
        write_csv(pl.DataFrame({"actual": [labels[i] for i in y], "predicted": [labels[i] for i in pred]}), PLOTS / "confusion" / f"{m}.csv")
        write_csv(pts, PLOTS / "pr" / f"{m}.csv")
        write_csv(class_points[m], PLOTS / "pr_per_class" / f"{m}.csv")
        figs["confusion"][m] = fig_confusion(m, y, pred, labels)
    figs["pr"] = fig_pr(curves, positive, target_p)
    figs["pr_per_class"] = report_classes.fig_pr_per_class(class_points, {m: metrics[m]["per_class"] for m in models},
                                                           labels, TITLES, COLORS, _save)
    figs["training"] = fig_training({m: summaries[m]["history"] for m in neural})
    return figs


@flow(name="report", log_prints=True)
def report_flow() -> str:
    p = params()
    info = read_dataset_info()
    labels = info["labels"]
    C = len(labels)
    target_p, target_r, alpha = p.report.target_precision, p.report.target_recall, p.report.significance
    positive = f"{labels[1]} against {labels[0]}" if C == 2 else "micro-averaged one-vs-rest over all classes"

    neural = tuple(p.train.models)  # this run's neural models, in params.yaml's order
    models = p.model_set()  # then the bars they must clear (baseline.models) and the ensemble, if there is one
    summaries = {m: json.loads(summary_path(m).read_text()) for m in models}
    timings = {m: {"train_seconds": summaries[m]["train_seconds"]} for m in models}
    preds = {m: load_predictions(m, C) for m in models}
    metrics, comparisons, tables = score_models(preds, summaries, labels, p)
    figs = write_plot_data(preds, summaries, metrics, labels, target_p, positive)
    figs["thresholds"] = report_thresholds.fig_thresholds(tables, TITLES, target_p, target_r, _save)
    shapes, legends = report_models.model_shapes(neural, C)
    examples = report_models.attention_examples(neural, labels, p.report.attention_examples, _save)
    space = embedding_space(labels, p.report, neural, _save)

    write_json({**metrics, "comparisons": comparisons}, METRICS)
    write_json(timings, TIMINGS)
    verdict = report_stats.verdict(metrics, comparisons, TITLES, neural, alpha)
    parts = {"verdict": verdict, "comparisons": report_stats.comparison_markdown(comparisons, TITLES, alpha),
             "thresholds": report_thresholds.markdown(tables, TITLES, target_p, target_r),
             "per_class": report_classes.markdown({m: metrics[m]["per_class"] for m in models}, labels, TITLES, figs["pr_per_class"]),
             "ensemble": report_ensemble.markdown(summaries.get(ENSEMBLE, {}), metrics, comparisons, preds[models[0]]["test"][0],
                                                  {m: preds[m]["test"][1].argmax(1) for m in models}, TITLES, alpha),
             "stops": stop_lines(summaries, neural), "embeddings": section_markdown(space),
             "machines": sorted({one_line(summaries[m]["machine"]) for m in neural if "machine" in summaries[m]}),
             "attention": report_models.attention_markdown(neural, examples),
             "shapes": report_models.shapes_markdown(shapes, legends, report_models.fig_shapes(shapes, legends, _save))}
    report = markdown_report(info, metrics, timings, figs, parts, positive, alpha)
    write_text(report, REPORT)
    create_markdown_artifact(report, key="model-comparison", description="reports/report.md")  # shown in the Prefect UI
    for line in verdict:
        print(line)
    print(f"report: {METRICS}, {REPORT}, {len(list(FIGURES.glob('*.png')))} figures in {FIGURES}")
    return str(REPORT)


def summary_path(name: str) -> Path:
    """Where a model's stage summarised its run: reports/train/<name>.json; the ensemble's is reports/ensemble.json
    (its stage depends on reports/train, so it cannot write there: dvc.yaml)."""
    return REPORTS / "ensemble.json" if name == ENSEMBLE else REPORTS / "train" / f"{name}.json"


def write_csv(df: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        df.write_csv(tmp)

