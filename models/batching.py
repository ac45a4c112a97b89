"""Batches of similar length, padded to the batch's own longest review (not to a fixed maximum).

Training: shuffle (seeded), cut into pools of `pool` batches, sort each pool by length, cut it into
batches, shuffle the batches. Reviews in a batch then have similar lengths, so little time goes on
padding, while each epoch still sees a different order. Evaluation: sort by length, batch, and put the
outputs back in the original order.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import polars as pl

from models.gru import PAD_ID

UNK_ID = 1


def starts_of(lengths: np.ndarray) -> np.ndarray:
    """Where each of a run of documents starts (n,) int64, given their lengths (n,), laid one after another."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


@dataclass
class TokenSet:
    """Token ids of many documents, stored flat: document i is ids[offsets[i]:offsets[i] + lengths[i]]."""

    ids: np.ndarray | TokenFile  # (N_tokens,) uint32 from a token table (half of int64's memory), any integer type given directly
    offsets: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> "TokenSet":
        return cls.from_lists(df["ids"], df["label_id"].to_numpy())

    @classmethod
    def from_lists(cls, ids: pl.Series | list[list[int]], labels: np.ndarray | None = None) -> "TokenSet":
        import polars as pl  # here, not at the top: the models need only torch + numpy to train (bench/ablations.py)

        series = ids if isinstance(ids, pl.Series) else pl.Series(ids, dtype=pl.List(pl.UInt32))
        # An empty document (everything cleaned away) becomes one <unk>: a GRU needs at least one step.
        series = pl.select(pl.when(series.list.len() == 0).then(pl.lit([UNK_ID], dtype=pl.List(pl.UInt32))).otherwise(series)).to_series()
        lengths = series.list.len().to_numpy().astype(np.int64)
        offsets = starts_of(lengths)
        flat = series.explode().to_numpy().astype(np.uint32, copy=False)  # token ids < 2**32: 4 bytes each
        labels = np.zeros(len(lengths), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        return cls(flat, offsets, lengths, labels)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) padded with <pad> to the longest of these documents, lengths (B,), labels (B,)."""
        lengths = self.lengths[idx]
        out = np.full((len(idx), int(lengths.max())), PAD_ID, dtype=np.int64)
        for row, (start, n) in enumerate(zip(self.offsets[idx], lengths)):
            out[row, :n] = self.ids[start:start + n]
        return torch.from_numpy(out), torch.from_numpy(lengths), torch.from_numpy(self.labels[idx])


def read_token_sets(path: Path, chosen: dict[str, tuple[np.ndarray, np.ndarray]], batch_rows: int = 8192) -> dict[str, TokenSet]:
    """TokenSets of a token table's rows (parquet, a list column `ids`), read a batch of rows at a time.
    chosen: {name: (rows, labels)}, the rows' positions in the table (ascending, (n,)) and their labels (n,).
    A first pass sizes one flat uint32 array per name, a second fills it: nothing else ever holds the token ids
    (reading the table whole held them three times over). As in `from_lists`, an empty document is one <unk>."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    own = np.concatenate([pc.list_value_length(b.column(0)).to_numpy(zero_copy_only=False)
                          for b in table.iter_batches(batch_size=batch_rows, columns=["ids"])] or [np.zeros(0)])
    own = np.maximum(own.astype(np.int64), 1)  # (N_rows,) each row's length, an empty one counted as its <unk>
    sets = {}
    for name, (rows, labels) in chosen.items():
        lengths = own[rows]
        offsets = starts_of(lengths)
        sets[name] = TokenSet(np.empty(int(lengths.sum()), dtype=np.uint32), offsets, lengths,
                              np.asarray(labels, dtype=np.int64))
    start = 0
    for batch in table.iter_batches(batch_size=batch_rows, columns=["ids"]):
        col = batch.column(0)
        n = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)  # (B,) 0 for an empty row
        flat = np.append(pc.list_flatten(col).to_numpy(zero_copy_only=False), np.uint32(UNK_ID))  # (T + 1,) the <unk> last
        begin = np.where(n > 0, starts_of(n), len(flat) - 1)  # (B,) an empty row reads the <unk>
        for name, (rows, _) in chosen.items():
            lo, hi = np.searchsorted(rows, [start, start + len(n)])
            if lo == hi:
                continue
            local, lengths = rows[lo:hi] - start, sets[name].lengths[lo:hi]  # (b,) rows of this batch, their lengths
            at = np.repeat(begin[local] - starts_of(lengths), lengths) + np.arange(lengths.sum())
            first = sets[name].offsets[lo]
            sets[name].ids[first:first + len(at)] = flat[at]
        start += len(n)
    return sets


class TokenFile:
    """A flat uint32 token file, read by position: `ids[lo:hi]` is one read (os.preadv) into a new array (hi - lo,).

    Not a memory map on purpose. Every page a map has touched stays in the process's resident set until the map
    closes, so a reader that went once through a 1.2 GB corpus ended with 1.2 GB more RSS (docs/benchmarks.md:
    the pretrain stage grew 8 bytes a token, its two token files read whole). Here what was read is the caller's
    until it drops it; the kernel's page cache still keeps the file near, outside the process."""

    itemsize = 4
    dtype = np.dtype(np.uint32)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size // self.itemsize

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"a TokenFile reads slices ids[lo:hi], not {key!r}")
        lo, hi, step = key.indices(self.size)
        if step != 1:
            raise TypeError("a TokenFile reads contiguous slices ids[lo:hi] only")
        out = np.empty(max(hi - lo, 0), dtype=self.dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):  # a read may return less than asked (Linux stops at about 2 GB)
            got = os.preadv(self.fd, [view[done:]], lo * self.itemsize + done)
            if got == 0:
                raise EOFError(f"{self.path} ended at byte {lo * self.itemsize + done}: it was changed while read")
            done += got
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole file in memory (np.asarray(ids)): for small corpora and tests, never the stages' way."""
        return self[:] if dtype is None else self[:].astype(dtype)

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:  # not set when the open failed
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


class TokenSink:
    """Documents' token ids added a chunk at a time and stored flat: kept in memory, or with `spill` written to
    that file (uint32) as they come and read back as a TokenFile, so that they never need fit in memory.

        with TokenSink(spill) as sink:
            for flat, lengths in chunks:   # (n_tokens,) ids of a few documents, (n_docs,) their lengths
                sink.add(flat, lengths)
        flat, offsets, lengths = sink.finish()
    """

    def __init__(self, spill: Path | None = None) -> None:
        self.spill = spill
        self.parts: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.out = open(spill, "wb") if spill is not None else None

    def __enter__(self) -> "TokenSink":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.out is not None:
            self.out.close()

    def add(self, flat: np.ndarray, lengths: np.ndarray | list[int]) -> None:
        self.lengths.append(np.asarray(lengths, dtype=np.int64))
        if self.out is not None:
            self.out.write(np.ascontiguousarray(flat, dtype=np.uint32).tobytes())
        else:
            self.parts.append(flat)

    def finish(self) -> tuple[np.ndarray | TokenFile, np.ndarray, np.ndarray]:
        """ids (N_tokens,): a TokenFile (uint32) when spilled, else the chunks joined; offsets (n_docs,) where
        each document starts; lengths (n_docs,)."""
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        offsets = starts_of(lengths)
        if self.out is not None:
            self.out.close()
            flat = TokenFile(self.spill)
        else:
            flat = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int64)
        return flat, offsets, lengths


def bucket_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50, bucketing: bool = True) -> list[np.ndarray]:
    """Index batches for one training epoch, seeded; similar lengths together when `bucketing`."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if bucketing:
        chunk = batch_size * pool
        order = np.concatenate([
            part[np.argsort(lengths[part], kind="stable")]
            for part in (order[i:i + chunk] for i in range(0, len(order), chunk))
        ])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Index batches for inference: by length, so each batch pads little (callers restore the order)."""
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]
