"""tokenize: training and encoding throughput and peak memory of every tokenizer kind (flows/tokenize.py).

Trained on train + unsup text, encoded: every labelled review (train + test), in chunks of
`tokenize.chunk_size`, truncated to `tokenize.max_length`, exactly as the stage does. For `char` the
named baseline is the generic path, `tok.encode_batch` through the per-character pre-tokenizer, against
the stage's code-point lookup fast path, on a bounded subset (the generic path is the memory-hungry one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import LABELS, in_child, rate, ratio, rss_mb, timer

KINDS = ("word", "bpe", "wordpiece", "char")


def _kind(clean: str, cfg: dict, tokens_out: str) -> dict[str, Any]:
    import numpy as np
    import polars as pl

    from flows.tokenize import encode, train_tokenizer
    from reweigh.params import TokenizeParams

    cfg_ = TokenizeParams(**cfg)
    df = pl.read_parquet(clean)
    fit = df.filter(pl.col("split").is_in(["train", "unsup"]))["text"]
    labelled = df.filter(pl.col("split") != "unsup")
    texts = labelled["text"].to_list()
    base = rss_mb()
    with timer() as t_train:
        tok = train_tokenizer(iter(fit), cfg_)
    after_train = rss_mb()
    with timer() as t_enc:
        ids = encode(tok, texts, cfg_.kind, cfg_.max_length, cfg_.chunk_size)
    n_tokens = int(sum(len(x) for x in ids))
    result = {
        "vocab_size": tok.get_vocab_size(),
        "fit_docs": fit.len(),
        "fit_chars": int(fit.str.len_chars().sum()),
        "train_s": round(t_train["s"], 3),
        "train_docs_per_s": rate(fit.len(), t_train["s"]),
        "encode_docs": len(texts),
        "encode_tokens": n_tokens,
        "encode_s": round(t_enc["s"], 3),
        "encode_docs_per_s": rate(len(texts), t_enc["s"]),
        "encode_tokens_per_s": rate(n_tokens, t_enc["s"]),
        "mean_tokens_per_doc": round(n_tokens / max(len(texts), 1), 1),
        "truncated_share": round(float(np.mean([len(x) >= cfg_.max_length for x in ids])), 4) if ids else 0.0,
        "rss_before_mb": base,
        "rss_after_train_mb": after_train,
        "chunk_size": cfg_.chunk_size,
        "max_length": cfg_.max_length,
    }
    if tokens_out:  # the train section's input: the project's own tokenizer kind
        label_id = labelled["label"].replace_strict(list(LABELS), [0, 1], return_dtype=pl.Int64)
        pl.DataFrame({"split": labelled["split"], "label_id": label_id,
                      "ids": pl.Series(ids, dtype=pl.List(pl.UInt32))}).write_parquet(tokens_out)
    return result


def _char_path(clean: str, cfg: dict, n_docs: int, path: str) -> dict[str, Any]:
    import polars as pl

    from flows.tokenize import _chunks, encode, train_tokenizer
    from reweigh.params import TokenizeParams

    cfg_ = TokenizeParams(**{**cfg, "kind": "char"})
    df = pl.read_parquet(clean)
    tok = train_tokenizer(iter(df.filter(pl.col("split").is_in(["train", "unsup"]))["text"]), cfg_)
    texts = df.filter(pl.col("split") != "unsup")["text"].head(n_docs).to_list()
    base = rss_mb()
    with timer() as t:
        if path == "fast":
            ids = encode(tok, texts, "char", cfg_.max_length, cfg_.chunk_size)
        else:  # what encode() does for every other kind: encode_batch_fast on the whole text, then truncate
            ids = []
            for chunk in _chunks(texts, cfg_.chunk_size):
                ids.extend(e.ids[:cfg_.max_length] for e in tok.encode_batch_fast(chunk, add_special_tokens=False))
    n_tokens = int(sum(len(x) for x in ids))
    digest = hash(tuple(tuple(x) for x in ids))
    return {"docs": len(texts), "tokens": n_tokens, "seconds": round(t["s"], 3),
            "docs_per_s": rate(len(texts), t["s"]), "tokens_per_s": rate(n_tokens, t["s"]),
            "rss_before_mb": base, "ids_digest": digest}


def run(work: Path, cfg: dict, quick: bool) -> dict[str, Any]:
    clean = str(work / "clean.parquet")
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        out = str(work / "tokens.parquet") if kind == cfg["kind"] else ""
        kinds[kind] = in_child(_kind, clean, {**cfg, "kind": kind}, out)
    n_docs = 500 if quick else 5000
    fast = in_child(_char_path, clean, cfg, n_docs, "fast")
    slow = in_child(_char_path, clean, cfg, n_docs, "encode_batch")
    same = fast.pop("ids_digest") == slow.pop("ids_digest")
    return {
        "config": {k: v for k, v in cfg.items() if k != "kind"},
        "project_kind": cfg["kind"],
        "kinds": kinds,
        "char_fast_path": {
            "docs": fast["docs"],
            "fast_lookup": fast,
            "baseline_encode_batch": slow,
            "speedup": ratio(fast["docs_per_s"], slow["docs_per_s"]),
            "same_ids": same,
        },
    }
