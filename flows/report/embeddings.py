"""The report's "semantic vector space" section: what an embedding layer is, shown on this run's own vectors.

An embedding gives each token id one row of E numbers; the model reads those rows, never the ids. Rows are
learned so that tokens used alike point alike, which cosine similarity measures. The report shows that with
- probe tokens (`report.probe_tokens`, or each class's strongest cues in the training split) and their
  nearest neighbours by cosine: in the pretrained space (artifacts/pretrained.pt) and in each trained
  model's embedding (artifacts/<model>.pt), so a reader sees what label training moved;
- reports/figures/embedding_space.png: a 2-D PCA of the most frequent training tokens' vectors, coloured
  by the class each token leans to;
- what the same input layer would cost as one-hot vectors.
Neighbours and numbers also go to reports/embeddings.json, rounded, so the same inputs give the same bytes.

Shapes: V vocabulary, E embedding width, C classes, N tokens of the training split.
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
from sklearn.decomposition import PCA  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from flows.common import ARTIFACTS, DATA, REPORTS  # noqa: E402
from flows.predict import token_strings  # noqa: E402
from flows.report.classes import plain  # noqa: E402
from models.embeddings import nearest_neighbours  # noqa: E402
from reweigh.io import write_json  # noqa: E402
from reweigh.params import ReportParams  # noqa: E402

PRETRAINED = ARTIFACTS / "pretrained.pt"
EMBEDDINGS = REPORTS / "embeddings.json"
SPECIAL = (0, 1)  # <pad>, <unk>: never a probe, a neighbour or a point of the figure
K = 8  # neighbours per probe
CUES_PER_CLASS = 3
LABELLED = 30  # tokens named in the figure


# ---------------------------------------------------------------- numbers
def class_counts(ids: np.ndarray, classes: np.ndarray, vocab_size: int, n_classes: int) -> np.ndarray:
    """How often each token occurs in each class's documents (C, V), from token ids (N,) and their class (N,)."""
    flat = np.bincount(classes * vocab_size + ids, minlength=n_classes * vocab_size)  # (C * V,)
    return flat.reshape(n_classes, vocab_size)  # (C, V)


def log_odds(counts: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Add-`alpha` smoothed log-odds (C, V) of each token in class c's text against the other classes' (> 0: leans
    to c), and its z-score (C, V): log-odds over their standard error, high only for a token both lopsided and
    frequent enough for that to be sure (Monroe, Colaresi & Quinn 2008, "Fightin' Words")."""
    rest = counts.sum(0, keepdims=True) - counts  # (C, V)

    def logit(n: np.ndarray) -> np.ndarray:
        p = (n + alpha) / (n.sum(1, keepdims=True) + alpha * n.shape[1])  # (C, V)
        return np.log(p) - np.log1p(-p)

    odds = logit(counts) - logit(rest)  # (C, V)
    return odds, odds / np.sqrt(1 / (counts + alpha) + 1 / (rest + alpha))


def min_count(n_tokens: int) -> int:
    """Occurrences a token needs to be chosen as a probe: 20, fewer on a small training split (1 per 10,000 tokens, at least 2)."""
    return int(np.clip(n_tokens // 10_000, 2, 20))


def cue_probes(odds: np.ndarray, z: np.ndarray, totals: np.ndarray, least: int, per_class: int = CUES_PER_CLASS) -> list[tuple[int, int]]:
    """(token id, class) of each class's `per_class` clearest cues among tokens seen `least` times: tokens with at
    least twice the odds in the class (log-odds >= ln 2) first, each group by z-score. Raw log-odds alone would
    pick names seen 20 times in one class (on IMDB: boll, uwe); z alone, common words that lean a little (and)."""
    allowed = totals >= least  # (V,)
    allowed[list(SPECIAL)] = False
    picks: list[tuple[int, int]] = []
    for c in range(odds.shape[0]):
        order = np.lexsort((-z[c], odds[c] < np.log(2)))  # (V,) twice-the-odds tokens first, then by z
        for i in [i for i in order if allowed[i] and odds[c, i] > 0][:per_class]:
            picks.append((int(i), c))
            allowed[i] = False  # one class per token
    return picks


def lookup_probes(vocab: dict[str, int], words: list[str]) -> tuple[list[int], list[str]]:
    """Token ids of probe words from params (BPE's word-start form "▁word" first, then lowercased), and the
    words the vocabulary does not have."""
    found, unknown = [], []
    for word in words:
        forms = [f for w in (word, word.lower()) for f in ((w,) if w.startswith("▁") else ("▁" + w, w))]
        ids = [vocab[f] for f in forms if f in vocab and vocab[f] not in SPECIAL]
        if not ids:
            unknown.append(word)
        elif ids[0] not in found:  # "Great" and "great" are one probe
            found.append(ids[0])
    return found, unknown


def neighbours(vectors: np.ndarray, probes: list[int], k: int = K) -> dict[int, list[tuple[int, float]]]:
    """Each probe's k nearest token ids by cosine in one space (V, E), best first; <pad> and <unk> left out.
    In float64, so the 3 rounded decimals do not hang on float32 summation order."""
    vectors = vectors.astype(np.float64)  # (V, E)
    # A vocabulary of fewer than k + 3 tokens (tokenize.vocab_size may be 3) runs out of candidates: the rest come
    # back with cosine -inf (the probe, <pad>, <unk>), so they are dropped rather than shown as neighbours.
    return {q: [(i, round(c, 3)) for i, c in nearest_neighbours(vectors, q, k, exclude=SPECIAL) if np.isfinite(c)]
            for q in probes}


def cue_class(odds: np.ndarray) -> np.ndarray:
    """The class each token is a cue of (V,): the one where it has at least twice the odds, else -1 (no class)."""
    return np.where(odds.max(0) >= np.log(2), odds.argmax(0), -1)


def same_class_share(found: dict[int, list[tuple[int, float]]], probe_class: dict[int, int], odds: np.ndarray) -> float:
    """Fraction of the class-cue probes' neighbours that are cues of the probe's own class."""
    cues = cue_class(odds)  # (V,)
    hits = [int(cues[i] == probe_class[q]) for q in probe_class for i, _ in found[q]]
    return round(sum(hits) / max(len(hits), 1), 3)


def closest_opposite(found: dict[int, list[tuple[int, float]]], probe_class: dict[int, int], odds: np.ndarray) -> tuple[int, int, float] | None:
    """(probe, neighbour, cosine) of the most similar neighbour that is a cue of another class than its probe."""
    cues = cue_class(odds)  # (V,)
    pairs = [(q, i, c) for q in probe_class for i, c in found[q] if cues[i] not in (-1, probe_class[q])]
    return max(pairs, key=lambda pair: pair[2], default=None)


def one_hot_cost(vocab_size: int, embedding_dim: int, hidden_size: int, directions: int) -> dict[str, Any]:
    """Input weights of the GRU's first layer: from one-hot vectors (V x 3H per direction: three gates) against
    an embedding (V x E) feeding the GRU (E x 3H per direction). Biases, equal in both, left out."""
    gates = 3 * hidden_size
    one_hot = vocab_size * gates * directions
    embedded = vocab_size * embedding_dim + embedding_dim * gates * directions
    return {"vocab_size": vocab_size, "embedding_dim": embedding_dim, "hidden_size": hidden_size, "directions": directions,
            "one_hot_weights": one_hot, "embedding_weights": embedded, "ratio": round(one_hot / embedded, 2)}


def projection(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates (n, 2) of vectors (n, E) by PCA (exact SVD, so deterministic), and the variance share of each
    axis (2,). Vectors are scaled to length 1 first: cosine, not length, is what makes two tokens alike."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # (n, E)
    xy, variance = np.zeros((len(unit), 2)), np.zeros(2)
    axes = min(2, *unit.shape)  # PCA needs as many tokens and widths as axes: a training split may hold one token
    if axes:
        pca = PCA(n_components=axes, svd_solver="full")
        xy[:, :axes] = pca.fit_transform(unit)
        # all vectors alike (e.g. zero rows): no variance to share, 0 / 0; say 0, not NaN (metrics JSON, "nan%")
        variance[:axes] = np.nan_to_num(pca.explained_variance_ratio_)
    return xy, variance


# ---------------------------------------------------------------- figure
def fig_embedding_space(xy: np.ndarray, names: list[str], odds: np.ndarray, labels: list[str], title: str) -> plt.Figure:
    """Tokens at their 2-D coordinates xy (n, 2); colour: the class they lean to, from log-odds (C, n)."""
    fig, ax = plt.subplots(figsize=(10, 8))
    strength = odds.max(0)  # (n,) how far a token leans to its likeliest class
    if len(labels) == 2:
        top = float(np.quantile(np.abs(odds[1]), 0.95)) or 1.0  # the few strongest saturate; the rest keep contrast
        dots = ax.scatter(xy[:, 0], xy[:, 1], c=odds[1], cmap="coolwarm", vmin=-top, vmax=top, s=18, edgecolors="none")
        fig.colorbar(dots, ax=ax, fraction=0.04, label=plain(f"log-odds {labels[1]} against {labels[0]} (training split)"))
    else:
        colours = plt.get_cmap("tab10")(odds.argmax(0) % 10)  # (n, 4)
        # neutral tokens fade; clipped, as 0.2 + 0.8 * s / s can round to 1.0000000000000002, which matplotlib
        # rejects ("RGBA values should be within 0-1 range"; issue 20: ham / promo / spam)
        colours[:, 3] = np.clip(0.2 + 0.8 * strength.clip(0) / max(float(strength.max()), 1e-9), 0.0, 1.0)
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=18, edgecolors="none")
        for c, label in enumerate(labels):
            ax.scatter([], [], color=plt.get_cmap("tab10")(c % 10), label=f"leans to {plain(label)}")
        ax.legend(fontsize=8, loc="best")
    for i in np.argsort(-strength, kind="stable")[:LABELLED]:
        ax.annotate(plain(names[i]), xy[i], fontsize=8, xytext=(3, 2), textcoords="offset points")
    ax.set(xlabel="principal component 1", ylabel="principal component 2")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- the section
def embedding_space(labels: list[str], cfg: ReportParams, models: tuple[str, ...],
                    save: Callable[[plt.Figure, str], str]) -> dict[str, Any]:
    """Probes, neighbours in every space that exists, the projection figure and the one-hot comparison:
    written to reports/embeddings.json and returned for the report."""
    tok = Tokenizer.from_file(str(ARTIFACTS / "tokenizer.json"))
    V, C = tok.get_vocab_size(), len(labels)
    train = pl.read_parquet(DATA / "tokens.parquet", columns=["split", "label_id", "ids"]).filter(pl.col("split") == "train")
    ids = train["ids"].explode().drop_nulls().to_numpy()  # (N,) an empty review explodes to one null
    classes = np.repeat(train["label_id"].to_numpy(), train["ids"].list.len().to_numpy())  # (N,)
    counts = class_counts(ids, classes, V, C)  # (C, V)
    totals, (odds, z) = counts.sum(0), log_odds(counts)  # (V,), (C, V), (C, V)

    spaces, configs = {}, {}
    if PRETRAINED.exists():
        spaces["pretrained"] = torch.load(PRETRAINED, map_location="cpu", weights_only=True)["embedding"].numpy()  # (V, E)
    for m in models:
        if (ARTIFACTS / f"{m}.pt").exists():
            ckpt = torch.load(ARTIFACTS / f"{m}.pt", map_location="cpu", weights_only=False)
            spaces[m], configs[m] = ckpt["state_dict"]["encoder.embedding.weight"].numpy(), ckpt["config"]  # (V, E)
    if not spaces:
        raise FileNotFoundError(f"no embedding to show: {PRETRAINED} and artifacts/{{{','.join(models)}}}.pt are all "
                                "missing; run the pretrain and train stages first (dvc repro)")

    if cfg.probe_tokens:
        probe_ids, unknown = lookup_probes(tok.get_vocab(), cfg.probe_tokens)
        probe_class: dict[int, int] = {}
    else:
        picks = cue_probes(odds, z, totals, min_count(len(ids)))
        probe_ids, unknown, probe_class = [i for i, _ in picks], [], dict(picks)
    found = {space: neighbours(vectors, probe_ids) for space, vectors in spaces.items()}

    frequent = [int(i) for i in np.argsort(-totals, kind="stable") if i not in SPECIAL and totals[i] > 0][:cfg.projection_tokens]
    shown = "pretrained" if "pretrained" in spaces else next(m for m in reversed(list(spaces)) if m != "pretrained")
    xy, variance = projection(spaces[shown][frequent])  # (n, 2), (2,)
    what = (f"pretrained embedding ({V:,} x {spaces[shown].shape[1]})" if shown == "pretrained" else
            f"{shown}'s trained embedding (no {PRETRAINED} to show)")
    figure = save(fig_embedding_space(xy, token_strings(tok, frequent), odds[:, frequent], labels,
                                      f"The {len(frequent)} most frequent training tokens in the {what}, PCA to 2-D "
                                      f"({variance.sum():.0%} of the variance); close = similar vectors"), "embedding_space.png")

    def named(rows: list[tuple[int, float]]) -> list[list]:
        return [[t, c] for t, (_, c) in zip(token_strings(tok, [i for i, _ in rows]), rows)]

    gru = configs.get("gru")
    record = {
        "probes": [{"token": t, "id": q, "cue_of": labels[probe_class[q]] if q in probe_class else None,
                    "neighbours": {space: named(f[q]) for space, f in found.items()}}
                   for q, t in zip(probe_ids, token_strings(tok, probe_ids))],
        "unknown_probes": unknown,
        "same_class_share": {space: same_class_share(f, probe_class, odds) for space, f in found.items()} if probe_class else {},
        "closest_opposite": {space: _named_pair(tok, closest_opposite(f, probe_class, odds)) for space, f in found.items()} if probe_class else {},
        "projection": {"space": shown, "tokens": len(frequent), "explained_variance": [round(float(v), 3) for v in variance],
                       "figure": figure},
        "one_hot": one_hot_cost(V, gru["embedding_dim"], gru["hidden_size"], 2 if gru["bidirectional"] else 1) if gru else None,
    }
    write_json(record, EMBEDDINGS)
    return record


def section_markdown(space: dict[str, Any]) -> list[str]:
    """The report's "The semantic vector space" section, from embedding_space's record."""
    probes = space["probes"]
    spaces = list(probes[0]["neighbours"]) if probes else []
    md = ["## The semantic vector space", "",
          "A model cannot do arithmetic on a token id: id 512 is not \"more\" than id 511. So the first layer of every neural "
          "model is an **embedding**: a table with one row of E numbers per vocabulary entry. Each id in a review picks its "
          "row, and the model (GRU, convolutions or Transformer) reads that sequence of vectors. With `init: pretrained` the rows start from the pretrain stage's "
          "vectors (learned from which tokens appear near which, without labels); training keeps adjusting them. Tokens used alike end up "
          "pointing alike; **cosine similarity** measures that (1: same direction, 0: unrelated).", ""]
    if any(p["cue_of"] for p in probes):
        md.append("Probes: each class's clearest cue tokens in the training split (at least twice the odds in that class "
                  "as in the rest, and frequent enough to be sure); set `report.probe_tokens` in params.yaml to choose your own.")
    if space["unknown_probes"]:
        md.append(f"Not in the vocabulary, so skipped: {', '.join(space['unknown_probes'])}.")
    if probes:
        md += ["", f"Nearest neighbours by cosine ({K} per probe, `<pad>` and `<unk>` left out):", "",
               "| probe | " + " | ".join(spaces) + " |", "|---|" + "---|" * len(spaces)]
        for p in probes:
            label = _cell(p["token"]) + (f" *({_cell(p['cue_of'])})*" if p["cue_of"] else "")  # class names may hold "|" too
            md.append(f"| **{label}** | " + " | ".join(", ".join(f"{_cell(t)} ({c:.2f})" for t, c in p["neighbours"][s])
                                                      for s in spaces) + " |")
    if space["same_class_share"]:
        first, opposite = spaces[0], space["closest_opposite"][spaces[0]]
        md += ["", "Neighbours that are themselves cues of the probe's class: "
               + ", ".join(f"{s} {v:.0%}" for s, v in space["same_class_share"].items()) + ". "
               + ("Pretraining sees only contexts, so" if first == "pretrained" else "Embeddings start from contexts, so")
               + " cues of different classes used in the same places (\"a ___ film\") can be neighbours"
               + (f" (here {opposite[0]} and {opposite[1]}, cosine {opposite[2]:.2f} in the {first} space)" if opposite else "")
               + "; training on labels can pull one class's cues together: compare the columns."]
    proj = space["projection"]
    md += ["", f"![embedding space]({proj['figure']})", "",
           f"Each dot is one of the {proj['tokens']} most frequent training tokens, placed by the two directions along which "
           f"the {proj['space']} vectors vary most (PCA); colour: the class the token leans to in the training split; the "
           f"{LABELLED} most class-leaning tokens are named."]
    if space["one_hot"]:
        o = space["one_hot"]
        pair = next(((p["token"], *p["neighbours"][spaces[0]][0]) for p in probes if p["neighbours"][spaces[0]]), None)
        md += ["", f"**One-hot against an embedding, for this run's GRU:** V = {o['vocab_size']:,} tokens, E = {o['embedding_dim']}, "
               f"hidden H = {o['hidden_size']} x {o['directions']} direction(s). A one-hot input layer needs V x 3H x directions = "
               f"{o['one_hot_weights']:,} weights; the embedding and the GRU's input weights need V x E + E x 3H x directions = "
               f"{o['embedding_weights']:,} ({o['ratio']:.1f}x fewer). And one-hot vectors are all equally far apart (cosine 0 "
               "between any two tokens), so nothing learned about one token carries over to another; the embedding puts tokens "
               "used alike side by side" + (f" ({pair[0]} next to {pair[1]}, cosine {pair[2]:.2f})" if pair else "") + ", so it does."]
    return md + [""]


def _named_pair(tok: Tokenizer, pair: tuple[int, int, float] | None) -> list | None:
    return None if pair is None else [*token_strings(tok, list(pair[:2])), pair[2]]


def _cell(token: str) -> str:
    """A token as text inside a markdown table cell."""
    return token.replace("|", "\\|")
