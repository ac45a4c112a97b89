"""Batches of similar length, padded to the batch's own longest review (not to a fixed maximum).

Training: shuffle (seeded), cut into pools of `pool` batches, sort each pool by length, cut it into
batches, shuffle the batches. Reviews in a batch then have similar lengths, so little time goes on
padding, while each epoch still sees a different order. Evaluation: sort by length, batch, and put the
outputs back in the original order.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import polars as pl

from models.gru import PAD_ID

UNK_ID = 1


@dataclass
class TokenSet:
    """Token ids of many documents, stored flat: document i is ids[offsets[i]:offsets[i] + lengths[i]]."""

    ids: np.ndarray  # (N_tokens,) uint32 from a token table (half of int64's memory), any integer type given directly
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
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
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
