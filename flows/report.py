"""report: every model's test predictions side by side: metrics, `dvc plots` data, PNG figures, a readable report.

Writes
- reports/metrics.json: per model accuracy, macro precision/recall/F1, ROC-AUC, PR-AUC (average precision),
  parameters, epochs. Only deterministic numbers: same params + seed → the same bytes, so `dvc metrics diff`
  shows real changes only. Wall-clock training time goes to reports/timings.json (also a DVC metrics file).
- reports/plots/: confusion/<model>.csv (actual, predicted), pr/<model>.csv (recall, precision, threshold),
  train/<model>.csv (per-epoch history), drawn by the `plots:` section of dvc.yaml.
- reports/figures/*.png (matplotlib, Agg) and reports/report.md, which links them.
- reports/embeddings.json and the report's "semantic vector space" section (flows/report_embeddings.py).

Binary tasks score the second class (`labels[1]`, e.g. pos) as the positive one; with more classes the
precision-recall curve and threshold table are micro-averaged one-vs-rest and PR-AUC / ROC-AUC are macro.
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
from sklearn.metrics import (  # noqa: E402
    average_precision_score, confusion_matrix, precision_recall_curve, precision_recall_fscore_support, roc_auc_score,
)
from sklearn.preprocessing import label_binarize  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from flows.common import ARTIFACTS, DATA, REPORTS, params, read_dataset_info, run_stage  # noqa: E402
from flows.predict import load_model, token_strings  # noqa: E402
from flows.report_embeddings import embedding_space, section_markdown  # noqa: E402
from models.batching import TokenSet  # noqa: E402
from reweigh.io import atomic_path, write_json, write_text  # noqa: E402

NEURAL = ("gru", "gru_attention")
MODELS = (*NEURAL, "baseline")
TITLES = {"gru": "GRU", "gru_attention": "GRU + attention", "baseline": "TF-IDF + LogReg"}
COLORS = {"gru": "tab:blue", "gru_attention": "tab:red", "baseline": "tab:gray"}
PLOTS, FIGURES = REPORTS / "plots", REPORTS / "figures"
METRICS, TIMINGS, REPORT = REPORTS / "metrics.json", REPORTS / "timings.json", REPORTS / "report.md"
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ---------------------------------------------------------------- numbers
def load_predictions(name: str, n_classes: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    df = pl.read_parquet(DATA / "predictions" / f"{name}.parquet").sort("id")
    probs = df.select([f"prob_{c}" for c in range(n_classes)]).to_numpy()
    return df["label_id"].to_numpy(), probs, df


def scores(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (truth, score) pairs a PR curve is drawn from: binary → positive class; else micro one-vs-rest."""
    if probs.shape[1] == 2:
        return (y == 1).astype(int), probs[:, 1]
    return label_binarize(y, classes=list(range(probs.shape[1]))).ravel(), probs.ravel()


def model_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    p, r, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    if probs.shape[1] == 2:
        roc, ap = roc_auc_score(y, probs[:, 1]), average_precision_score(y, probs[:, 1])
    else:
        onehot = label_binarize(y, classes=list(range(probs.shape[1])))
        roc = roc_auc_score(y, probs, multi_class="ovr", average="macro")
        ap = average_precision_score(onehot, probs, average="macro")
    return {k: round(float(v), 6) for k, v in
            {"accuracy": (pred == y).mean(), "precision_macro": p, "recall_macro": r, "f1_macro": f1,
             "roc_auc": roc, "pr_auc": ap}.items()}


def operating_point(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of the model's own decisions (argmax; for two classes, threshold 0.5)."""
    truth, _ = scores(y, probs)
    decided = label_binarize(probs.argmax(1), classes=list(range(probs.shape[1]))).ravel() if probs.shape[1] > 2 else (probs.argmax(1) == 1).astype(int)
    tp = int((decided & truth).sum())
    return tp / max(int(truth.sum()), 1), tp / max(int(decided.sum()), 1)


def threshold_rows(y: np.ndarray, probs: np.ndarray, target_p: float, target_r: float) -> dict[str, Any]:
    truth, score = scores(y, probs)
    rows = []
    for t in THRESHOLDS:
        hit = score >= t
        tp = int((hit & (truth == 1)).sum())
        rows.append({"threshold": t, "precision": round(tp / max(int(hit.sum()), 1), 4), "recall": round(tp / max(int(truth.sum()), 1), 4)})
    precision, recall, thresholds = precision_recall_curve(truth, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    ok_p = np.flatnonzero(precision >= target_p)
    ok_r = np.flatnonzero(recall >= target_r)
    at_p = {"threshold": round(float(thresholds[ok_p[0]]), 4), "precision": round(float(precision[ok_p[0]]), 4),
            "recall": round(float(recall[ok_p[0]]), 4)} if ok_p.size else None
    at_r = {"threshold": round(float(thresholds[ok_r[-1]]), 4), "precision": round(float(precision[ok_r[-1]]), 4),
            "recall": round(float(recall[ok_r[-1]]), 4)} if ok_r.size else None
    return {"rows": rows, "target_precision": at_p, "target_recall": at_r}


def pr_points(y: np.ndarray, probs: np.ndarray, n: int = 200) -> pl.DataFrame:
    truth, score = scores(y, probs)
    precision, recall, thresholds = precision_recall_curve(truth, score)
    keep = np.unique(np.linspace(0, len(thresholds) - 1, n).round().astype(int))
    return pl.DataFrame({"recall": recall[keep].round(5), "precision": precision[keep].round(5), "threshold": thresholds[keep].round(5)})


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


def fig_thresholds(tables: dict[str, dict[str, Any]], target_p: float, target_r: float) -> str:
    header = ["threshold"] + [f"{TITLES[m]}\nprecision / recall" for m in tables]
    body = [[f"{t:.1f}"] + [f"{tables[m]['rows'][i]['precision']:.3f} / {tables[m]['rows'][i]['recall']:.3f}" for m in tables]
            for i, t in enumerate(THRESHOLDS)]
    for key, label in (("target_precision", f"t for P ≥ {target_p:.0%}"), ("target_recall", f"t for R ≥ {target_r:.0%}")):
        body.append([label] + [(f"t={tables[m][key]['threshold']:.3f}: {tables[m][key]['precision']:.3f} / {tables[m][key]['recall']:.3f}"
                                if tables[m][key] else "not reached") for m in tables])
    fig, ax = plt.subplots(figsize=(3 + 2.8 * len(tables), 0.42 * (len(body) + 2) + 0.6))
    ax.axis("off")
    table = ax.table(cellText=body, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_height(cell.get_height() * 1.6)
        elif row > len(THRESHOLDS):
            cell.set_facecolor("#fff3d6")
    ax.set_title("Precision and recall at decision thresholds (test split)", pad=4)
    return _save(fig, "thresholds.png")


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
def verdict(metrics: dict[str, dict[str, float]]) -> list[str]:
    ranked = sorted(metrics, key=lambda m: -metrics[m]["accuracy"])
    best, second = ranked[0], ranked[1]
    gap = 100 * (metrics[best]["accuracy"] - metrics[second]["accuracy"])
    lines = [f"**{TITLES[best]} wins** with {metrics[best]['accuracy']:.2%} test accuracy, "
             f"{gap:.2f} percentage points ahead of {TITLES[second]} ({metrics[second]['accuracy']:.2%}); "
             f"macro F1 {metrics[best]['f1_macro']:.4f} against {metrics[second]['f1_macro']:.4f}."]
    base = metrics["baseline"]["accuracy"]
    for m in NEURAL:
        d = 100 * (metrics[m]["accuracy"] - base)
        lines.append(f"- {TITLES[m]} {'clears' if d > 0 else 'does not clear'} the TF-IDF bar: {d:+.2f} points "
                     f"({metrics[m]['accuracy']:.2%} against {base:.2%}).")
    d = 100 * (metrics["gru_attention"]["accuracy"] - metrics["gru"]["accuracy"])
    lines.append(f"- Attention against the plain GRU: {d:+.2f} points of accuracy, "
                 f"{metrics['gru_attention']['pr_auc'] - metrics['gru']['pr_auc']:+.4f} PR-AUC.")
    return lines


def stop_lines(summaries: dict[str, dict]) -> list[str]:
    """How each neural model's embedding started and why its training ended (older summaries lack both)."""
    return [f"- **{TITLES[m]}**: started from {summaries[m].get('init', 'a random init (not recorded)')}; stopped by "
            f"{summaries[m].get('stop_reason', 'not recorded (retrain to see why)')}." for m in NEURAL]


def markdown_report(info: dict, metrics: dict, timings: dict, figs: dict, tables: dict, shapes: dict, legends: dict,
                    examples: list[dict], positive: str, target_p: float, target_r: float, stops: list[str],
                    embedding_section: list[str]) -> str:
    cols = list(metrics)
    md = ["# reweigh: model comparison", "",
          f"Dataset `{info['name']}`: classes {', '.join(info['labels'])}; rows per split "
          + ", ".join(f"{k} {v:,}" for k, v in info.get("rows", {}).items()) + ". All numbers are on the test split, "
          "which no model saw while training or early stopping.", "", "## Verdict", "", *verdict(metrics), "",
          "## Metrics", "", "| metric | " + " | ".join(TITLES[m] for m in cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, label, fmt in (("accuracy", "accuracy", "{:.4f}"), ("precision_macro", "precision (macro)", "{:.4f}"),
                            ("recall_macro", "recall (macro)", "{:.4f}"), ("f1_macro", "F1 (macro)", "{:.4f}"),
                            ("roc_auc", "ROC-AUC", "{:.4f}"), ("pr_auc", "PR-AUC (average precision)", "{:.4f}"),
                            ("parameters", "parameters", "{:,}"), ("epochs", "epochs run", "{}"), ("best_epoch", "best epoch", "{}")):
        md.append(f"| {label} | " + " | ".join(fmt.format(metrics[m][key]) for m in cols) + " |")
    md.append("| training time (s) | " + " | ".join(f"{timings[m]['train_seconds']:.0f}" for m in cols) + " |")
    md += ["", "Training time is wall-clock on the machine that ran the stage; it lives in `reports/timings.json`, "
           "not `metrics.json`, so that the same params and seed give byte-identical metrics.", "",
           "### How each model started and why it stopped", "", *stops, "", "## Confusion matrices", ""]
    md += [f"![{TITLES[m]} confusion]({figs['confusion'][m]})" for m in cols]
    md += ["", "## Precision-recall", "", f"Positive class: {positive}. Dots: each model's operating point.", "",
           f"![precision-recall curves]({figs['pr']})", "", "### Thresholds", "",
           "| threshold | " + " | ".join(f"{TITLES[m]} P / R" for m in cols) + " |", "|---|" + "---:|" * len(cols)]
    for i, t in enumerate(THRESHOLDS):
        md.append(f"| {t:.1f} | " + " | ".join(f"{tables[m]['rows'][i]['precision']:.3f} / {tables[m]['rows'][i]['recall']:.3f}" for m in cols) + " |")
    for key, label in (("target_precision", f"lowest t with precision ≥ {target_p:.0%}"), ("target_recall", f"highest t with recall ≥ {target_r:.0%}")):
        md.append(f"| {label} | " + " | ".join(
            f"t={tables[m][key]['threshold']:.3f}: {tables[m][key]['precision']:.3f} / {tables[m][key]['recall']:.3f}" if tables[m][key] else "not reached"
            for m in cols) + " |")
    md += ["", f"![threshold table]({figs['thresholds']})", "", "## Training curves", "", f"![training curves]({figs['training']})", "",
           *embedding_section, "## Where attention looked", "",
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


@flow(name="report", log_prints=True)
def report_flow() -> str:
    p = params()
    info = read_dataset_info()
    labels = info["labels"]
    C = len(labels)
    target_p, target_r = p.report.target_precision, p.report.target_recall
    positive = f"{labels[1]} against {labels[0]}" if C == 2 else "micro-averaged one-vs-rest over all classes"

    summaries = {m: json.loads((REPORTS / "train" / f"{m}.json").read_text()) for m in MODELS}
    metrics, timings, tables, curves, figs = {}, {}, {}, {}, {"confusion": {}}
    for m in MODELS:
        y, probs, df = load_predictions(m, C)
        s = summaries[m]
        metrics[m] = {**model_metrics(y, probs), "parameters": s["parameters"], "epochs": s["epochs"], "best_epoch": s.get("best_epoch", 0)}
        timings[m] = {"train_seconds": s["train_seconds"]}
        tables[m] = threshold_rows(y, probs, target_p, target_r)
        pts = pr_points(y, probs)
        curves[m] = (pts, operating_point(y, probs), metrics[m]["pr_auc"])
        pred = probs.argmax(1)
        write_csv(pl.DataFrame({"actual": [labels[i] for i in y], "predicted": [labels[i] for i in pred]}), PLOTS / "confusion" / f"{m}.csv")
        write_csv(pts, PLOTS / "pr" / f"{m}.csv")
        figs["confusion"][m] = fig_confusion(m, y, pred, labels)
        if m in NEURAL:
            write_csv(pl.DataFrame(s["history"]).drop("seconds", strict=False), PLOTS / "train" / f"{m}.csv")

    figs["pr"] = fig_pr(curves, positive, target_p)
    figs["thresholds"] = fig_thresholds(tables, target_p, target_r)
    figs["training"] = fig_training({m: summaries[m]["history"] for m in NEURAL})

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

    write_json(metrics, METRICS)
    write_json(timings, TIMINGS)
    report = markdown_report(info, metrics, timings, figs, tables, shapes, legends, examples, positive, target_p, target_r,
                             stop_lines(summaries), section_markdown(space))
    write_text(report, REPORT)
    create_markdown_artifact(report, key="model-comparison", description="reports/report.md")  # shown in the Prefect UI
    for line in verdict(metrics):
        print(line)
    print(f"report: {METRICS}, {REPORT}, {len(list(FIGURES.glob('*.png')))} figures in {FIGURES}")
    return str(REPORT)


def write_csv(df: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        df.write_csv(tmp)


if __name__ == "__main__":
    run_stage(report_flow, "report")
