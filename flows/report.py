"""report: every model's predictions side by side: metrics, `dvc plots` data, PNG figures, a readable report.

Each model's data/predictions/<model>.parquet holds its validation and test rows (column `split`). Every
score is on the test split; the validation rows only choose the decision thresholds (flows/report_thresholds.py).

Writes
- reports/metrics.json: per model accuracy, macro precision/recall/F1, ROC-AUC, PR-AUC (average precision),
  bootstrap confidence intervals of accuracy and macro F1, per-class results (`per_class`), the thresholds
  (`thresholds`), parameters, epochs; and `comparisons`: each pair of models, paired tests on the same test
  rows (flows/report_stats.py). Only deterministic numbers, only numbers as leaves: same params + seed → the
  same bytes, so `dvc metrics diff` shows real changes only. Wall-clock training time goes to
  reports/timings.json (also a DVC metrics file).
- reports/plots/: confusion/<model>.csv (actual, predicted), pr/<model>.csv (recall, precision, threshold),
  pr_per_class/<model>.csv (class, recall, precision, threshold), train/<model>.csv (per-epoch history);
  the `plots:` section of dvc.yaml draws all but the per-class curves.
- reports/figures/*.png (matplotlib, Agg) and reports/report.md, which links them.
- reports/embeddings.json and the report's "semantic vector space" section (flows/report_embeddings.py).

Binary tasks score the second class (`labels[1]`, e.g. pos) as the positive one; with more classes the
precision-recall curve and threshold table are micro-averaged one-vs-rest and PR-AUC / ROC-AUC are macro;
the per-class section (flows/report_classes.py) shows each class on its own.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from flows import report_classes, report_stats, report_thresholds  # noqa: E402
from flows.common import ARTIFACTS, DATA, REPORTS, params, read_dataset_info, run_stage  # noqa: E402
from flows.predict import load_model, token_strings  # noqa: E402
from flows.report_embeddings import embedding_space, section_markdown  # noqa: E402
from flows.report_scores import MODELS, NEURAL, load_predictions, operating_point, pr_points, score_models  # noqa: E402
from models.batching import TokenSet  # noqa: E402
from reweigh.io import atomic_path, write_json, write_text  # noqa: E402

TITLES = {"gru": "GRU", "gru_attention": "GRU + attention", "baseline": "TF-IDF + LogReg"}
COLORS = {"gru": "tab:blue", "gru_attention": "tab:red", "baseline": "tab:gray"}
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
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), layout="constrained")
    for ax, mat, title, fmt, top in ((axes[0], cm, "counts", "{:,.0f}", None), (axes[1], norm, "row-normalised (recall per class)", "{:.1%}", 1.0)):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=top)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
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
           title=f"Precision-recall on the test split ({positive})")
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


def fig_attention(i: int, tokens: list[str], weights: np.ndarray, title: str, per_row: int = 14) -> str:
    rows = int(np.ceil(len(tokens) / per_row))
    fig, ax = plt.subplots(figsize=(13, 0.38 * rows + 0.9))
    ax.set(xlim=(0, per_row), ylim=(rows, 0))
    ax.axis("off")
    cmap, top = plt.get_cmap("Reds"), float(weights.max())
    for k, (tok, w) in enumerate(zip(tokens, weights)):
        r, c = divmod(k, per_row)
        shade = w / top
        ax.add_patch(plt.Rectangle((c + 0.02, r + 0.06), 0.96, 0.88, color=cmap(0.85 * shade)))
        label = tok if len(tok) <= 12 else tok[:11] + "…"
        ax.text(c + 0.5, r + 0.5, label, ha="center", va="center", fontsize=8.5 if len(label) <= 9 else 7,
                color="white" if shade > 0.6 else "black")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top / 0.85))
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="pooling weight")
    ax.set_title(title, fontsize=10, loc="left")
    return _save(fig, f"attention_{i}.png")


def fig_shapes(tables: dict[str, list[tuple[str, str, str]]], legend: dict[str, str]) -> str:
    n = sum(len(t) + 2 for t in tables.values())
    fig, axes = plt.subplots(len(tables), 1, figsize=(11, 0.3 * n + 1.2),
                             gridspec_kw={"height_ratios": [len(t) + 1 for t in tables.values()]})
    for ax, (name, rows) in zip(np.atleast_1d(axes), tables.items()):
        ax.axis("off")
        table = ax.table(cellText=[list(r) for r in rows], colLabels=["step", "module", "output shape", "symbolic"], loc="center",
                         cellLoc="left", colWidths=[0.18, 0.27, 0.27, 0.28])
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1, 1.35)
        ax.set_title(f"{TITLES[name]}: {legend[name]}", fontsize=10)
    return _save(fig, "shapes.png")


# ---------------------------------------------------------------- models, traced
# What each step's output means, by module: the same letters as the shape comments in models/.
SYMBOLIC = {"Embedding": "(B, T, E)", "GRUEncoder": "(B, T, H)", "Identity": "(B, T, H)", "SinusoidalPositions": "(B, T, H)",
            "MultiHeadSelfAttention": "(B, T, H), (B, nh, T, T)", "LayerNorm": "(B, T, H)", "Pooling": "(B, H)",
            "AttentionPooling": "(B, H), (B, T)", "Linear": "(B, C)"}


def trace_shapes(model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> list[tuple[str, str, str, str]]:
    """(step, module, output shape, symbolic shape) of each top-level step of a forward pass, in the order they ran."""
    rows = [("input ids", "", str(tuple(ids.shape)), "(B, T)"), ("input lengths", "", str(tuple(lengths.shape)), "(B,)")]
    hooks = []

    def shape(out: Any) -> str:
        if isinstance(out, torch.Tensor):
            return str(tuple(out.shape))
        return ", ".join(shape(o) for o in out if o is not None)

    steps = [("encoder.embedding", "embedding")]
    steps += [(n, n) for n, _ in model.named_children()]
    for path, label in steps:
        module = model.get_submodule(path)
        hooks.append(module.register_forward_hook(
            lambda m, _i, out, label=label: rows.append((label, type(m).__name__, shape(out), _symbolic(m, rows)))))
    try:
        with torch.no_grad():
            model(ids, lengths, **({"return_attention": True} if "return_attention" in model.forward.__code__.co_varnames else {}))
    finally:
        for h in hooks:
            h.remove()
    return rows


def _symbolic(module: torch.nn.Module, rows: list) -> str:
    kind = type(module).__name__
    if kind == "Dropout":  # keeps the shape of what it was given: the row before it
        return rows[-1][3].split("), ")[0].rstrip(")") + ")" if rows else ""
    return SYMBOLIC.get(kind, "")


def attention_examples(labels: list[str], n: int) -> list[dict[str, Any]]:
    if n == 0:
        return []
    model, _ = load_model("gru_attention")
    tok = Tokenizer.from_file(str(ARTIFACTS / "tokenizer.json"))
    test = pl.read_parquet(DATA / "tokens.parquet").filter(pl.col("split") == "test").sort("id")
    short = test.filter(pl.col("length").is_between(30, 110))
    short = short.filter(pl.int_range(pl.len()).over("label_id") < 150)  # every class, yet few: (N, nh, T, T) weights
    short = short if short.height >= n else test.sort("length").head(max(n * 20, 1))
    data = TokenSet.from_frame(short)
    with torch.no_grad():
        ids, lengths, y = data.batch(np.arange(len(data)))
        logits, att = model(ids, lengths, return_attention=True)  # (N, C), {"pool": (N, T)}
    probs = torch.softmax(logits, -1).numpy()
    pred = probs.argmax(1)
    picks: list[int] = []
    for c in range(len(labels)):  # one confidently right review per class, then the first wrong one
        right = np.flatnonzero((pred == y.numpy()) & (y.numpy() == c))
        if right.size:
            picks.append(int(right[np.argmax(probs[right, c])]))
    wrong = np.flatnonzero(pred != y.numpy())
    if wrong.size:
        picks.insert(min(len(picks), n - 1), int(wrong[0]))
    out = []
    for k, i in enumerate(picks[:n], start=1):
        L = int(lengths[i])
        w = att["pool"][i, :L].numpy()
        tokens = token_strings(tok, ids[i, :L].tolist())
        verdict = "right" if pred[i] == y[i] else "WRONG"
        title = (f"test review {short['id'][i]}: true {labels[int(y[i])]}, predicted {labels[int(pred[i])]} "
                 f"(p={probs[i, pred[i]]:.2f}, {verdict}); colour = attention-pooling weight")
        top = np.argsort(-w)[:8]
        out.append({"id": short["id"][i], "true": labels[int(y[i])], "predicted": labels[int(pred[i])],
                    "figure": fig_attention(k, tokens, w, title),
                    "top_tokens": [(tokens[j], round(float(w[j]), 3)) for j in top]})
    return out


# ---------------------------------------------------------------- the report
def stop_lines(summaries: dict[str, dict]) -> list[str]:
    """How each neural model's embedding started and why its training ended (older summaries lack both)."""
    return [f"- **{TITLES[m]}**: started from {summaries[m].get('init', 'a random init (not recorded)')}; stopped by "
            f"{summaries[m].get('stop_reason', 'not recorded (retrain to see why)')}." for m in NEURAL]


def markdown_report(info: dict, metrics: dict, timings: dict, figs: dict, parts: dict[str, list[str]], shapes: dict,
                    legends: dict, examples: list[dict], positive: str, alpha: float) -> str:
    """reports/report.md; `parts` holds the sections other modules write: verdict, comparisons, thresholds,
    per_class, stops, embeddings."""
    cols = list(metrics)
    ci = report_stats.level_text(alpha)
    md = ["# reweigh: model comparison", "",
          f"Dataset `{info['name']}`: classes {', '.join(info['labels'])}; rows per split "
          + ", ".join(f"{k} {v:,}" for k, v in info.get("rows", {}).items()) + ". All scores are on the test split, "
          "which no model saw while training or early stopping; in this report the validation split serves only to choose "
          "the decision thresholds.", "", "## Verdict", "", *parts["verdict"], "",
          "## Metrics", "", "| metric | " + " | ".join(TITLES[m] for m in cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, label, fmt in (("accuracy", "accuracy", "{:.4f}"), ("accuracy_ci", f"accuracy, {ci}", None),
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
           "Training time is wall-clock on the machine that ran the stage; it lives in `reports/timings.json`, "
           "not `metrics.json`, so that the same params and seed give byte-identical metrics.", "",
           *parts["comparisons"], "### How each model started and why it stopped", "", *parts["stops"], "",
           *parts["per_class"], "## Confusion matrices", ""]
    md += [f"![{TITLES[m]} confusion]({figs['confusion'][m]})" for m in cols]
    md += ["", "## Precision-recall", "", f"Positive class: {positive}. Dots: each model's operating point.", "",
           f"![precision-recall curves]({figs['pr']})", "", *parts["thresholds"],
           f"![threshold table]({figs['thresholds']})", "", "## Training curves", "", f"![training curves]({figs['training']})", "",
           *parts["embeddings"], "## Where attention looked", "",
           "Each token of a short test review, shaded by the weight the attention-pooling layer gave it "
           "(the weights over a review's real tokens sum to 1).", ""]
    for ex in examples:
        md += [f"- `{ex['id']}` true **{ex['true']}**, predicted **{ex['predicted']}**; weighed most: "
               + ", ".join(f"{t} ({w:.2f})" for t, w in ex["top_tokens"]), "", f"  ![attention]({ex['figure']})", ""]
    md += ["## Tensor shapes, layer by layer", ""]
    for m, rows in shapes.items():
        md += [f"**{TITLES[m]}** ({legends[m]})", "", "| step | module | output shape | symbolic |", "|---|---|---|---|"]
        md += [f"| {a} | {b} | `{c}` | `{d}` |" for a, b, c, d in rows] + [""]
    md += [f"![shapes]({figs['shapes']})", ""]
    return "\n".join(md)


def write_plot_data(preds: dict, summaries: dict, metrics: dict, labels: list[str], target_p: float, positive: str) -> dict:
    """CSVs under reports/plots/ and the PR, confusion, per-class and training figures; returns the figures' paths."""
    curves, class_points, figs = {}, {}, {"confusion": {}}
    for m in MODELS:
        y, probs, _ = preds[m]["test"]
        pred = probs.argmax(1)
        pts = pr_points(y, probs)
        curves[m] = (pts, operating_point(y, probs), metrics[m]["pr_auc"])
        class_points[m] = report_classes.class_pr_points(y, probs, labels)
        write_csv(pl.DataFrame({"actual": [labels[i] for i in y], "predicted": [labels[i] for i in pred]}), PLOTS / "confusion" / f"{m}.csv")
        write_csv(pts, PLOTS / "pr" / f"{m}.csv")
        write_csv(class_points[m], PLOTS / "pr_per_class" / f"{m}.csv")
        figs["confusion"][m] = fig_confusion(m, y, pred, labels)
        if m in NEURAL:
            write_csv(pl.DataFrame(summaries[m]["history"]).drop("seconds", strict=False), PLOTS / "train" / f"{m}.csv")
    figs["pr"] = fig_pr(curves, positive, target_p)
    figs["pr_per_class"] = report_classes.fig_pr_per_class(class_points, {m: metrics[m]["per_class"] for m in MODELS},
                                                           labels, TITLES, COLORS, _save)
    figs["training"] = fig_training({m: summaries[m]["history"] for m in NEURAL})
    return figs


@flow(name="report", log_prints=True)
def report_flow() -> str:
    p = params()
    info = read_dataset_info()
    labels = info["labels"]
    C = len(labels)
    target_p, target_r, alpha = p.report.target_precision, p.report.target_recall, p.report.significance
    positive = f"{labels[1]} against {labels[0]}" if C == 2 else "micro-averaged one-vs-rest over all classes"

    summaries = {m: json.loads((REPORTS / "train" / f"{m}.json").read_text()) for m in MODELS}
    timings = {m: {"train_seconds": summaries[m]["train_seconds"]} for m in MODELS}
    preds = {m: load_predictions(m, C) for m in MODELS}
    metrics, comparisons, tables = score_models(preds, summaries, labels, p)
    figs = write_plot_data(preds, summaries, metrics, labels, target_p, positive)
    figs["thresholds"] = report_thresholds.fig_thresholds(tables, TITLES, target_p, target_r, _save)

    test = pl.read_parquet(DATA / "tokens.parquet").filter(pl.col("split") == "test").sort("length").head(8)
    probe = TokenSet.from_frame(test)
    ids, lengths, _ = probe.batch(np.arange(len(probe)))
    shapes, legends = {}, {}
    for m in NEURAL:
        model, ckpt = load_model(m)
        cfg = model.cfg
        shapes[m] = trace_shapes(model, ids, lengths)
        legends[m] = (f"B={ids.shape[0]} reviews, T={ids.shape[1]} tokens, E={cfg.embedding_dim}, H={cfg.width}"
                      + (f", nh={cfg.heads}, hd={cfg.width // cfg.heads}" if m == "gru_attention" else "") + f", C={C}")
    figs["shapes"] = fig_shapes(shapes, legends)
    examples = attention_examples(labels, p.report.attention_examples)
    space = embedding_space(labels, p.report, NEURAL, _save)

    write_json({**metrics, "comparisons": comparisons}, METRICS)
    write_json(timings, TIMINGS)
    verdict = report_stats.verdict(metrics, comparisons, TITLES, NEURAL, alpha)
    parts = {"verdict": verdict, "comparisons": report_stats.comparison_markdown(comparisons, TITLES, alpha),
             "thresholds": report_thresholds.markdown(tables, TITLES, target_p, target_r),
             "per_class": report_classes.markdown({m: metrics[m]["per_class"] for m in MODELS}, labels, TITLES, figs["pr_per_class"]),
             "stops": stop_lines(summaries), "embeddings": section_markdown(space)}
    report = markdown_report(info, metrics, timings, figs, parts, shapes, legends, examples, positive, alpha)
    write_text(report, REPORT)
    create_markdown_artifact(report, key="model-comparison", description="reports/report.md")  # shown in the Prefect UI
    for line in verdict:
        print(line)
    print(f"report: {METRICS}, {REPORT}, {len(list(FIGURES.glob('*.png')))} figures in {FIGURES}")
    return str(REPORT)


def write_csv(df: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        df.write_csv(tmp)


if __name__ == "__main__":
    run_stage(report_flow, "report")
