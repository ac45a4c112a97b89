"""tokenize: train a HF `tokenizers` tokenizer on the training text, encode every labelled document.

Trained on split train (plus unsup when the adapter loaded it), never on val or test, so no evaluation
text leaks into the vocabulary. Kinds: `word` (WordLevel), `bpe`, `wordpiece`, `char`. Ids: `<pad>` = 0,
`<unk>` = 1. Encoding runs in chunks (one `encode_batch` over 50k long reviews peaks near 4 GB).

The stage streams: the tokenizer is fitted on the training text read batch by batch from data/clean.parquet,
then each batch of labelled rows is encoded and written as its own row group of data/tokens.parquet, so the
stage holds one batch and the tokenizer, however many documents there are. `engine.kind: dask` encodes the
batches as tasks on a Dask cluster (flows/shards.py); the vocabulary is fitted once, here.

The `char` kind is a WordLevel tokenizer over single characters, so tokenizer.json decodes and predicts
like the others; bulk encoding uses a code-point lookup table instead, which gives the same ids about 50x
faster than the per-character pre-tokenizer (a test holds the two to the same output).
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from flows.common import ARTIFACTS, DATA, REPORTS, params, read_dataset_info, run_stage
from flows.shards import run_batches
from reweigh.io import atomic_path, read_batches, write_json
from reweigh.params import EngineParams, TokenizeParams

INPUT = DATA / "clean.parquet"
TOKENIZER = ARTIFACTS / "tokenizer.json"
OUTPUT = DATA / "tokens.parquet"
STATS = REPORTS / "tokenize.json"
PAD, UNK = "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, UNK]  # ids 0 and 1, in this order
FIT_SPLITS = ("train", "unsup")  # the text a tokenizer learns from: never val or test


def train_tokenizer(texts: Iterable[str], cfg: TokenizeParams) -> Tokenizer:
    if cfg.kind == "char":
        return _char_tokenizer(texts, cfg)
    if cfg.kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS)
    elif cfg.kind == "bpe":
        # Metaspace keeps word boundaries in the tokens, so decoding gives back the cleaned text.
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS)
    elif cfg.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS)
    else:  # params validation makes this unreachable; kept so a new kind cannot slip through silently
        raise ValueError(f"unknown tokenizer kind {cfg.kind!r}")
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _char_tokenizer(texts: Iterable[str], cfg: TokenizeParams) -> Tokenizer:
    counts = np.zeros(0x110000, dtype=np.int64)
    for chunk in _chunks(texts, 5000):
        cps = np.frombuffer("".join(chunk).encode("utf-32-le"), dtype=np.uint32)
        counts += np.bincount(cps, minlength=0x110000)
    order = np.argsort(-counts, kind="stable")  # most frequent first, ties by code point
    keep = [int(cp) for cp in order[: cfg.vocab_size - len(SPECIAL_TOKENS)] if counts[cp] >= cfg.min_frequency]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({chr(cp): i + len(SPECIAL_TOKENS) for i, cp in enumerate(sorted(keep))})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def truncate(seq, max_length: int, truncation: str = "head", head_share: float = 0.5):
    """The part of a token list (or a string, for `char`) that a model reads, at most `max_length` long:
    its start (`head`), its end (`tail`), or the first round(head_share x max_length) items and the rest from
    its end (`head_tail`: a review states its subject first and often its verdict last). Shorter ones whole."""
    if len(seq) <= max_length:
        return seq
    head = _head(max_length, truncation, head_share)
    return seq[:head] + seq[len(seq) - (max_length - head):]


def _head(max_length: int, truncation: str, head_share: float) -> int:
    """How many of the max_length kept tokens come from the start of a longer document."""
    if truncation not in ("head", "tail", "head_tail"):
        raise ValueError(f"tokenize.truncation {truncation!r}: use head, tail or head_tail")
    return {"head": max_length, "tail": 0}.get(truncation, round(head_share * max_length))


def head_tokens(cfg: TokenizeParams) -> int:
    """tokenize.* as the number of kept tokens taken from a document's start (the rest from its end)."""
    return _head(cfg.max_length, cfg.truncation, cfg.head_share)


def encode(tok: Tokenizer, texts: list[str], kind: str, max_length: int, chunk_size: int = 2000,
           truncation: str = "head", head_share: float = 0.5) -> list[list[int]]:
    """Token ids of each text, cut to `max_length` tokens as `truncation` says (see `truncate`)."""
    if kind == "char":
        lut, unk = _char_lookup(tok)
        out = []
        for text in texts:
            cps = np.frombuffer(truncate(text, max_length, truncation, head_share).encode("utf-32-le"), dtype=np.uint32)
            ids = np.where(cps < lut.size, lut[np.minimum(cps, lut.size - 1)], unk)
            out.append(ids.tolist())
        return out
    out = []
    for chunk in _chunks(texts, chunk_size):  # _fast: no character offsets, which nothing here reads (a third less time)
        out.extend(truncate(enc.ids, max_length, truncation, head_share)
                   for enc in tok.encode_batch_fast(chunk, add_special_tokens=False))
    return out


def _char_lookup(tok: Tokenizer) -> tuple[np.ndarray, int]:
    unk = tok.token_to_id(UNK)
    chars = {t: i for t, i in tok.get_vocab().items() if t not in SPECIAL_TOKENS}
    lut = np.full(max((ord(c) for c in chars), default=0) + 1, unk, dtype=np.uint32)
    for c, i in chars.items():
        lut[ord(c)] = i
    return lut, unk


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    with atomic_path(path) as tmp:
        tok.save(str(tmp))


def fit_texts(path: Path, batch_rows: int | None = None) -> Iterator[str]:
    """The texts a tokenizer is fitted on (splits train and unsup), read a batch of rows at a time."""
    for batch in read_batches(path, ["text", "split"], batch_rows):
        yield from batch.filter(pl.col("split").is_in(FIT_SPLITS))["text"]


def encode_frame(batch: pl.DataFrame, tok: Tokenizer, cfg: TokenizeParams, labels: list[str]) -> pl.DataFrame:
    """Rows of the cleaned table as data/tokens.parquet holds them: id, split, label, label_id, ids, length."""
    ids = encode(tok, batch["text"].to_list(), cfg.kind, cfg.max_length, cfg.chunk_size, cfg.truncation, cfg.head_share)
    return batch.select(
        "id", "split", "label",
        pl.col("label").replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).alias("label_id"),
        pl.Series("ids", ids, dtype=pl.List(pl.UInt32)),
    ).with_columns(length=pl.col("ids").list.len().cast(pl.UInt32))


def encode_batch(batch: pl.DataFrame, tokenizer: str, tokenize: dict, labels: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """The stage's work on one batch of the cleaned table (flows/shards.py runs it here or on a Dask worker): its
    labelled rows encoded with the tokenizer saved at `tokenizer`, and the counts the stage's stats sum."""
    tok, cfg = _load_tokenizer(tokenizer, Path(tokenizer).stat().st_mtime_ns), TokenizeParams(**tokenize)
    part = encode_frame(batch.filter(pl.col("split") != "unsup"), tok, cfg, labels)
    return part, {"documents": part.height, "tokens": int(part["length"].sum()),
                  "truncated": int((part["length"] >= cfg.max_length).sum()),
                  "unk": int(part["ids"].explode().eq(tok.token_to_id(UNK)).sum())}


@functools.lru_cache(maxsize=2)
def _load_tokenizer(path: str, mtime_ns: int) -> Tokenizer:
    return Tokenizer.from_file(path)


def write_tokens(path: Path, tokenizer: Path, cfg: TokenizeParams, labels: list[str], target: Path,
                 engine: EngineParams | None = None) -> dict[str, int]:
    """Every labelled row of the cleaned table at `path` encoded with the tokenizer saved at `tokenizer` into
    `target`, a row group per batch; the counts the stage's stats come from."""
    schema = pl.read_parquet_schema(path)
    columns = ["id", "split", "label", "text"]
    empty = encode_frame(pl.DataFrame(schema={c: schema[c] for c in columns}), Tokenizer.from_file(str(tokenizer)), cfg, labels)
    counts = run_batches("flows.tokenize:encode_batch", path, columns, target, empty, engine or EngineParams(),
                         {"tokenizer": str(Path(tokenizer).resolve()), "tokenize": cfg.model_dump(), "labels": list(labels)})
    return {key: counts.get(key, 0) for key in ("documents", "tokens", "truncated", "unk")}


@flow(name="tokenize", log_prints=True)
def tokenize_flow() -> str:
    p = params()
    cfg = p.tokenize
    labels = read_dataset_info()["labels"]
    tok = train_tokenizer(fit_texts(INPUT), cfg)
    save_tokenizer(tok, TOKENIZER)
    n = write_tokens(INPUT, TOKENIZER, cfg, labels, OUTPUT, p.engine)
    stats = {
        "kind": cfg.kind,
        "vocab_size": tok.get_vocab_size(),
        "fit_documents": pl.scan_parquet(INPUT).filter(pl.col("split").is_in(FIT_SPLITS)).select(pl.len()).collect().item(),
        "documents": n["documents"],
        "mean_length": round(n["tokens"] / n["documents"], 2) if n["documents"] else None,
        "truncated_share": round(n["truncated"] / n["documents"], 4) if n["documents"] else None,
        "unk_share": round(n["unk"] / n["tokens"], 5) if n["tokens"] else None,
    }
    write_json(stats, STATS)
    print(f"tokenize: {stats} → {TOKENIZER}, {OUTPUT}")
    return str(OUTPUT)


if __name__ == "__main__":
    run_stage(tokenize_flow, "tokenize")
