"""The report's per-architecture sections: each model's tensor shapes, layer by layer, and where the attention
models looked on a few test reviews. Covers every model params.yaml's `train.models` can name (models.registry.MODELS).

Shapes: B reviews, T tokens (the batch's longest), E embedding width, H a GRU's output width, F filters per
kernel width K of the CNN (nK widths), D the Transformer's width, nh heads of width hd, C classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from flows.common import ARTIFACTS, DATA  # noqa: E402
from flows.predict import ATTENTION_MODELS, forward_with_weights, load_model, token_strings, weights_meaning  # noqa: E402
from flows.report.classes import plain  # noqa: E402
from models.batching import TokenSet  # noqa: E402

TITLES = {"gru": "GRU", "gru_attention": "GRU + attention", "cnn": "CNN", "transformer": "Transformer",
          "tfidf_lr": "TF-IDF + LogReg", "nbsvm": "NB-SVM", "ensemble": "Ensemble"}
COLORS = {"gru": "tab:blue", "gru_attention": "tab:red", "cnn": "tab:green", "transformer": "tab:purple",
          "tfidf_lr": "tab:gray", "nbsvm": "tab:brown", "ensemble": "tab:orange"}
Save = Callable[[plt.Figure, str], str]

# ---------------------------------------------------------------- tensor shapes
# What each step's output means, by module, for the GRUs (traced by their top-level children).
SYMBOLIC = {"Embedding": "(B, T, E)", "GRUEncoder": "(B, T, H)", "Identity": "(B, T, H)", "SinusoidalPositions": "(B, T, H)",
            "MultiHeadSelfAttention": "(B, T, H), (B, nh, T, T)", "LayerNorm": "(B, T, H)", "Pooling": "(B, H)",
            "AttentionPooling": "(B, H), (B, T)", "Linear": "(B, C)"}


def _steps(name: str, model: torch.nn.Module) -> list[tuple[str, str, str | None]]:
    """(submodule path, step label, symbolic shape; None = by module kind) of the steps a forward pass shows."""
    if name == "cnn":  # the max-pool and concatenation are no modules: _trace records them around `pool`
        return [("encoder.embedding", "embedding", "(B, T, E)"),
                *((f"encoder.convs.{i}", f"Conv1D K={k} + ReLU", f"(B, F, T-{k}+1)") for i, k in enumerate(model.cfg.widths)),
                ("dropout", "dropout", "(B, nK·F)"), ("head", "head", "(B, C)")]
    if name == "transformer":
        steps = [("encoder.embedding", "embedding", "(B, T, D)"), ("encoder.positions", "positions", "(B, T, D)")]
        for i in range(model.cfg.layers):
            steps += [(f"encoder.blocks.{i}.attention", f"block {i + 1}: self-attention", "(B, T, D), (B, nh, T, T)"),
                      (f"encoder.blocks.{i}.mlp", f"block {i + 1}: MLP", "(B, T, D)"),
                      (f"encoder.blocks.{i}", f"block {i + 1}: output", "(B, T, D), (B, nh, T, T)")]
        return steps + [("encoder.norm", "final LayerNorm", "(B, T, D)"), ("pool", f"{model.cfg.pooling} pooling", "(B, D), (B, T)"),
                        ("dropout", "dropout", "(B, D)"), ("head", "head", "(B, C)")]
    return [("encoder.embedding", "embedding", None), *((n, n, None) for n, _ in model.named_children())]


def trace_shapes(model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor, name: str = "") -> list[tuple[str, str, str, str]]:
    """(step, module, output shape, symbolic shape) of each step of a forward pass, in the order they ran."""
    rows = [("input ids", "", str(tuple(ids.shape)), "(B, T)"), ("input lengths", "", str(tuple(lengths.shape)), "(B,)")]
    hooks = []

    def shape(out: Any) -> str:
        if isinstance(out, torch.Tensor):
            return str(tuple(out.shape))
        return ", ".join(shape(o) for o in out if o is not None)

    for path, label, symbolic in _steps(name, model):
        hooks.append(model.get_submodule(path).register_forward_hook(
            lambda m, _i, out, label=label, symbolic=symbolic: rows.append(
                (label, type(m).__name__, shape(out), symbolic if symbolic is not None else _symbolic(m, rows)))))
    if name == "cnn":
        pool = model.pool

        def recorded(maps: list[torch.Tensor]):
            pooled, where = pool(maps)  # (B, nK*F), nK x (B, F)
            for k, m in zip(model.cfg.widths, maps):
                rows.append((f"max over time, K={k}", "max", str(tuple(m.amax(-1).shape)), "(B, F)"))
            rows.append(("concatenate (flatten)", "cat", str(tuple(pooled.shape)), "(B, nK·F)"))
            return pooled, where

        model.pool = recorded  # an instance attribute, shadowing the method for this one pass
    try:
        with torch.no_grad():
            model(ids, lengths, **({"return_attention": True} if "return_attention" in model.forward.__code__.co_varnames else {}))
    finally:
        for h in hooks:
            h.remove()
        if name == "cnn":
            del model.pool
    return rows


def _symbolic(module: torch.nn.Module, rows: list) -> str:
    kind = type(module).__name__
    if kind == "Dropout":  # keeps the shape of what it was given: the row before it
        return rows[-1][3].split("), ")[0].rstrip(")") + ")" if rows else ""
    return SYMBOLIC.get(kind, "")


def legend(name: str, cfg: Any, ids: torch.Tensor, n_classes: int) -> str:
    """The sizes behind the symbols, for this run's model `name`."""
    sizes = f"B={ids.shape[0]} reviews, T={ids.shape[1]} tokens"
    if name == "cnn":
        return f"{sizes}, E={cfg.embedding_dim}, K in {list(cfg.widths)}, nK={len(cfg.widths)}, F={cfg.filters}, C={n_classes}"
    if name == "transformer":
        return (f"{sizes}, D={cfg.width}, {cfg.layers} blocks, nh={cfg.heads}, hd={cfg.width // cfg.heads}, "
                f"MLP {cfg.ff}, C={n_classes}")
    return (f"{sizes}, E={cfg.embedding_dim}, H={cfg.width}"
            + (f", nh={cfg.heads}, hd={cfg.width // cfg.heads}" if name == "gru_attention" else "") + f", C={n_classes}")


def model_shapes(models: tuple[str, ...], n_classes: int) -> tuple[dict, dict]:
    """Each model's shape table and legend, traced on the test split's 8 shortest reviews."""
    test = pl.read_parquet(DATA / "tokens.parquet").filter(pl.col("split") == "test").sort("length").head(8)
    probe = TokenSet.from_frame(test)
    ids, lengths, _ = probe.batch(np.arange(len(probe)))
    shapes, legends = {}, {}
    for m in models:
        model, _ = load_model(m)
        shapes[m] = trace_shapes(model, ids, lengths, m)
        legends[m] = legend(m, model.cfg, ids, n_classes)
    return shapes, legends


def fig_shapes(tables: dict[str, list[tuple[str, str, str, str]]], legends: dict[str, str], save: Save) -> str:
    n = sum(len(t) + 2 for t in tables.values())
    fig, axes = plt.subplots(len(tables), 1, figsize=(11, 0.3 * n + 1.2),
                             gridspec_kw={"height_ratios": [len(t) + 1 for t in tables.values()]})
    for ax, (name, rows) in zip(np.atleast_1d(axes), tables.items()):
        ax.axis("off")
        table = ax.table(cellText=[list(r) for r in rows], colLabels=["step", "module", "output shape", "symbolic"], loc="center",
                         cellLoc="left", colWidths=[0.24, 0.22, 0.27, 0.27])
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1, 1.35)
        ax.set_title(f"{TITLES[name]}: {legends[name]}", fontsize=10)
    return save(fig, "shapes.png")


def shapes_markdown(shapes: dict, legends: dict, figure: str) -> list[str]:
    md = ["## Tensor shapes, layer by layer", ""]
    for m, rows in shapes.items():
        md += [f"**{TITLES[m]}** ({legends[m]})", "", "| step | module | output shape | symbolic |", "|---|---|---|---|"]
        md += [f"| {a} | {b} | `{c}` | `{d}` |" for a, b, c, d in rows] + [""]
    return md + [f"![shapes]({figure})", ""]


# ---------------------------------------------------------------- where attention looked
def fig_attention(i: int, tokens: list[str], panels: list[tuple[str, np.ndarray]], title: str, save: Save, per_row: int = 14) -> str:
    """One review's tokens, shaded by each attention model's weights (one panel per model)."""
    rows = max(int(np.ceil(len(tokens) / per_row)), 1)  # an empty review still gets its (empty) panel
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, len(panels) * (0.38 * rows + 0.6) + 0.3), squeeze=False)
    cmap = plt.get_cmap("Reds")
    for ax, (caption, weights) in zip(axes[:, 0], panels):
        ax.set(xlim=(0, per_row), ylim=(rows, 0))
        ax.axis("off")
        top = float(weights.max(initial=0.0)) or 1.0  # no tokens, or all weights 0: no division by zero, a scale of 0-1
        for k, (tok, w) in enumerate(zip(tokens, weights)):
            r, c = divmod(k, per_row)
            shade = w / top
            ax.add_patch(plt.Rectangle((c + 0.02, r + 0.06), 0.96, 0.88, color=cmap(0.85 * shade)))
            label = tok if len(tok) <= 12 else tok[:11] + "…"
            ax.text(c + 0.5, r + 0.5, plain(label), ha="center", va="center", fontsize=8.5 if len(label) <= 9 else 7,
                    color="white" if shade > 0.6 else "black")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top / 0.85))
        fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="weight")
        ax.set_title(plain(caption), fontsize=9, loc="left")  # tokens and class names: text, not mathtext ("$$")
    fig.suptitle(plain(title), fontsize=10, x=0.02, ha="left")
    return save(fig, f"attention_{i}.png")


def attention_examples(models: tuple[str, ...], labels: list[str], n: int, save: Save) -> list[dict[str, Any]]:
    """A few short test reviews, chosen by the first attention model of the set (one confidently right per class,
    then a wrong one), each shown with the weights of every attention model in the set."""
    shown = [m for m in ATTENTION_MODELS if m in models]
    if n == 0 or not shown:
        return []
    nets = {m: load_model(m)[0] for m in shown}
    tok = Tokenizer.from_file(str(ARTIFACTS / "tokenizer.json"))
    test = pl.read_parquet(DATA / "tokens.parquet").filter(pl.col("split") == "test").sort("id")
    short = test.filter(pl.col("length").is_between(30, 110))
    short = short.filter(pl.int_range(pl.len()).over("label_id") < 150)  # every class, yet few: (N, nh, T, T) weights
    short = short if short.height >= n else test.sort("length").head(max(n * 20, 1))
    data = TokenSet.from_frame(short)
    ids, lengths, y = data.batch(np.arange(len(data)))
    probs, weights = {}, {}
    with torch.no_grad():
        for m, net in nets.items():
            logits, w = forward_with_weights(net, m, ids, lengths)  # (N, C), (N, T)
            probs[m], weights[m] = torch.softmax(logits, -1).numpy(), w.numpy()
    first = shown[0]
    pred = probs[first].argmax(1)
    picks: list[int] = []
    for c in range(len(labels)):  # one confidently right review per class, then the first wrong one
        right = np.flatnonzero((pred == y.numpy()) & (y.numpy() == c))
        if right.size:
            picks.append(int(right[np.argmax(probs[first][right, c])]))
    wrong = np.flatnonzero(pred != y.numpy())
    if wrong.size:
        picks.insert(min(len(picks), n - 1), int(wrong[0]))
    out = []
    for k, i in enumerate(picks[:n], start=1):
        L = int(lengths[i])
        tokens = token_strings(tok, ids[i, :L].tolist())
        per_model, panels = {}, []
        for m in shown:
            w, p = weights[m][i, :L], probs[m][i]
            top = np.argsort(-w)[:8]
            per_model[m] = {"predicted": labels[int(p.argmax())], "top_tokens": [(tokens[j], round(float(w[j]), 3)) for j in top]}
            panels.append((f"{TITLES[m]}: predicted {labels[int(p.argmax())]} (p={p.max():.2f}); colour = "
                           f"{weights_meaning(m, nets[m])}", w))
        verdict = "right" if pred[i] == y[i] else "WRONG"
        title = (f"test review {short['id'][i]}: true {labels[int(y[i])]}, {TITLES[first]} predicted "
                 f"{labels[int(pred[i])]} ({verdict})")
        out.append({"id": short["id"][i], "true": labels[int(y[i])], "predicted": labels[int(pred[i])],
                    "figure": fig_attention(k, tokens, panels, title, save), "models": per_model,
                    "top_tokens": per_model[first]["top_tokens"]})
    return out


def attention_markdown(models: tuple[str, ...], examples: list[dict]) -> list[str]:
    shown = [m for m in ATTENTION_MODELS if m in models]
    md = ["## Where attention looked", ""]
    if not shown:
        return md + [f"No model of this run has attention weights to show ({' or '.join(ATTENTION_MODELS)} in train.models).", ""]
    md += ["Each token of a short test review, shaded by the weight each attention model gave it (a review's weights "
           "over its real tokens sum to 1): " + "; ".join(
               f"{TITLES[m]}: {'the attention-pooling layer' if m == 'gru_attention' else 'its pooling weights if it pools by attention, else the attention each token received in the last block, averaged over heads and attending tokens'}"
               for m in shown) + ".", ""]
    for ex in examples:
        md += [f"- `{ex['id']}` true **{ex['true']}**; " + "; ".join(
            f"{TITLES[m]} predicted **{r['predicted']}**, weighed most: " + ", ".join(f"{t} ({w:.2f})" for t, w in r["top_tokens"])
            for m, r in ex["models"].items()), "", f"  ![attention]({ex['figure']})", ""]
    return md
