"""pretrain: learn token embeddings from the unlabelled text, before any classifier sees a label.

    python -m flows.pretrain

Reads data/clean.parquet (only split train and, when the adapter loaded it, unsup: never val or test
text), artifacts/tokenizer.json and `pretrain.*`. Encodes those documents whole with the run's tokenizer, a
batch at a time into a temporary file beside the artifacts (the corpus is read back a chunk at a time:
the stage never holds it), and learns one vector per vocabulary entry (models/embeddings.py: positive PMI + truncated SVD). Writes
artifacts/pretrained.pt (the vectors, each token's corpus count, the params) and reports/pretrain.json.
Both neural models start from these vectors when `model.<name>.init: pretrained` (the default).
A dataset without unlabelled text still pretrains, on its training text alone.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import resource
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import torch
from prefect import flow
from tokenizers import Tokenizer

from flows.common import ARTIFACTS, DATA, REPORTS, params, run_stage
from flows.tokenize import encode, head_tokens
from models.batching import TokenFile, TokenSink
from models.embeddings import ppmi_svd_embeddings
from models.language_model import pretrain_encoder
from models.train_loop import setup_torch
from reweigh import machine
from reweigh.io import atomic_path, read_batches, write_json

INPUT = DATA / "clean.parquet"
TOKENIZER = ARTIFACTS / "tokenizer.json"
OUTPUT = ARTIFACTS / "pretrained.pt"
STATS = REPORTS / "pretrain.json"
PRETRAIN_SPLITS = ("train", "unsup")  # never val or test


def corpus_ids(tok: Tokenizer, texts: Iterable[list[str]] | list[str], kind: str, max_length: int, chunk: int = 2000,
               spill: Path | None = None) -> tuple[np.ndarray | TokenFile, np.ndarray]:
    """All documents' token ids one after another (N,) and where each document starts (n_docs,). `texts`: a list of
    texts, or batches of them. Encoded a chunk at a time into numpy, so long reviews never sit in memory as Python
    lists; with `spill`, the ids go to that file (uint32) as they come and return as a TokenFile, read by slices:
    the corpus is never in memory at all."""
    batches = [texts] if isinstance(texts, list) else texts
    with TokenSink(spill) as sink:
        for batch in batches:
            for lo in range(0, len(batch), chunk):
                ids = encode(tok, batch[lo:lo + chunk], kind, max_length or 10**9, chunk)
                sink.add(np.fromiter((i for doc in ids for i in doc), dtype=np.int64), [len(x) for x in ids])
    flat, starts, _ = sink.finish()
    return flat, starts


def pretraining_texts(counted: dict[str, int]) -> Iterator[list[str]]:
    """The texts of splits train and unsup, a batch at a time (reweigh.io.read_batches); `counted` gets the
    documents per split."""
    for batch in read_batches(INPUT, columns=["text", "split"]):
        batch = batch.filter(pl.col("split").is_in(PRETRAIN_SPLITS))
        for split in PRETRAIN_SPLITS:
            counted[split] = counted.get(split, 0) + int((batch["split"] == split).sum())
        yield batch["text"].to_list()


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
    tok = Tokenizer.from_file(str(TOKENIZER))
    documents: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=ARTIFACTS, prefix=".pretrain-") as spill:  # the corpus, on disk while it is read
        ids, starts = corpus_ids(tok, pretraining_texts(documents), p.tokenize.kind, cfg.max_length, p.tokenize.chunk_size,
                                 spill=Path(spill) / "ids.u32")
        encode_seconds = time.perf_counter() - t0
        vectors, counts = ppmi_svd_embeddings(ids, starts, tok.get_vocab_size(), cfg.dim, cfg.window, p.seed, cfg.smoothing)
        method, saved = "ppmi_svd", {"embedding": torch.from_numpy(vectors)}
        if cfg.encoder_epochs:
            method = "ppmi_svd+bilm"
            saved = pretrain_encoder(torch.from_numpy(vectors), torch.from_numpy(counts), ids, starts,
                                     **language_model_cut(p), hidden_size=cfg.hidden_size, negatives=cfg.negatives,
                                     epochs=cfg.encoder_epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=p.seed,
                                     device=setup_torch(p.train.device, p.train.threads), spill=Path(spill) / "cut.u32")
        n_tokens = len(ids)
        ids.close()  # the file, closed before its folder goes
    with atomic_path(OUTPUT) as tmp:
        torch.save({"method": method, "params": cfg.model_dump(), "seed": p.seed,
                    "counts": torch.from_numpy(counts), **saved}, tmp)
    stats = {
        "method": method,
        "language_model": saved.get("history", []),
        "language_model_read": saved.get("read", {}),
        "documents": {s: documents.get(s, 0) for s in PRETRAIN_SPLITS},
        "tokens": int(n_tokens),
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
