"""pretrain: learn token embeddings from the unlabelled text, before any classifier sees a label.

    python -m flows.pretrain

Reads data/clean.parquet (only split train and, when the adapter loaded it, unsup: never val or test
text), artifacts/tokenizer.json and `pretrain.*`. Encodes those documents whole with the run's tokenizer
and learns one vector per vocabulary entry (models/embeddings.py: positive PMI + truncated SVD). Writes
artifacts/pretrained.pt (the vectors, each token's corpus count, the params) and reports/pretrain.json.
Both neural models start from these vectors when `model.<name>.init: pretrained` (the default).
A dataset without unlabelled text still pretrains, on its training text alone.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import resource
import time

import numpy as np
import polars as pl
import torch
from prefect import flow
from tokenizers import Tokenizer

from flows.common import ARTIFACTS, DATA, REPORTS, params, run_stage
from flows.tokenize import encode, head_tokens
from models.embeddings import ppmi_svd_embeddings
from models.language_model import pretrain_encoder
from models.train_loop import setup_torch
from reweigh import machine
from reweigh.io import atomic_path, write_json

INPUT = DATA / "clean.parquet"
TOKENIZER = ARTIFACTS / "tokenizer.json"
OUTPUT = ARTIFACTS / "pretrained.pt"
STATS = REPORTS / "pretrain.json"
PRETRAIN_SPLITS = ("train", "unsup")  # never val or test


def corpus_ids(tok: Tokenizer, texts: list[str], kind: str, max_length: int, chunk: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """All documents' token ids one after another (N,) and where each document starts (n_docs,).
    Encoded a chunk at a time into numpy, so 75k long reviews never sit in memory as Python lists."""
    parts, lengths = [], []
    for lo in range(0, len(texts), chunk):
        ids = encode(tok, texts[lo:lo + chunk], kind, max_length or 10**9, chunk)
        lengths.extend(len(x) for x in ids)
        parts.append(np.fromiter((i for doc in ids for i in doc), dtype=np.int64))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return flat, starts


def language_model_cut(p) -> dict[str, int]:
    """What the language model reads of each document: the classifiers' cut (tokenize.*), shortened to
    pretrain.lm_max_length when that is set: {"max_length": tokens, "head": of them from the start}."""
    n = min(p.pretrain.lm_max_length or p.tokenize.max_length, p.tokenize.max_length)
    return {"max_length": n, "head": head_tokens(p.tokenize.model_copy(update={"max_length": n}))}


@flow(name="pretrain", log_prints=True)
def pretrain_flow() -> str:
    p = params()
    cfg = p.pretrain
    t0 = time.perf_counter()
    df = pl.read_parquet(INPUT, columns=["text", "split"]).filter(pl.col("split").is_in(PRETRAIN_SPLITS))
    tok = Tokenizer.from_file(str(TOKENIZER))
    ids, starts = corpus_ids(tok, df["text"].to_list(), p.tokenize.kind, cfg.max_length, p.tokenize.chunk_size)
    encode_seconds = time.perf_counter() - t0
    vectors, counts = ppmi_svd_embeddings(ids, starts, tok.get_vocab_size(), cfg.dim, cfg.window, p.seed, cfg.smoothing)
    method, saved = "ppmi_svd", {"embedding": torch.from_numpy(vectors)}
    if cfg.encoder_epochs:
        method = "ppmi_svd+bilm"
        saved = pretrain_encoder(torch.from_numpy(vectors), torch.from_numpy(counts), ids, starts,
                                 **language_model_cut(p), hidden_size=cfg.hidden_size, negatives=cfg.negatives,
                                 epochs=cfg.encoder_epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=p.seed,
                                 device=setup_torch(p.train.device, p.train.threads))
    with atomic_path(OUTPUT) as tmp:
        torch.save({"method": method, "params": cfg.model_dump(), "seed": p.seed,
                    "counts": torch.from_numpy(counts), **saved}, tmp)
    stats = {
        "method": method,
        "language_model": saved.get("history", []),
        "language_model_read": saved.get("read", {}),
        "documents": {s: int((df["split"] == s).sum()) for s in PRETRAIN_SPLITS},
        "tokens": int(len(ids)),
        "vocab_size": int(len(counts)),
        "vocab_seen": int((counts > 0).sum()),
        "dim": cfg.dim,
        "window": cfg.window,
        "machine": machine.describe(),  # float kernels differ by CPU: the weights are this machine's
    }
    write_json(stats, STATS)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pretrain: {stats['tokens']:,} tokens of {sum(stats['documents'].values()):,} documents "
          f"({stats['documents']}), {len(counts):,} x {cfg.dim} vectors in {seconds:.1f} s "
          f"(encoding {encode_seconds:.1f} s), peak RSS {peak:,.0f} MiB → {OUTPUT}")
    return str(OUTPUT)


if __name__ == "__main__":
    run_stage(pretrain_flow, "pretrain")
