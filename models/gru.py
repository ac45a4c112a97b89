"""GRUClassifier: embedding → GRU over packed sequences → pooling over real tokens → dropout → linear.

Shapes: B batch, T the batch's longest review (tokens), E embedding width, H the GRU output width
(hidden_size x directions), C classes. Token id 0 is `<pad>`; `lengths` says how many tokens are real.

Padding never changes a prediction (a test holds both models to that), by one of two equivalent routes:
- `packed=True`: packed sequences, so the GRU never reads a padded step at all.
- `packed=False` (default): each direction reads the real tokens first, in its own order (the backward
  direction gets every review reversed within its length), so padding only ever comes after the last real
  step and no real step's state depends on it. Same weights, same outputs as the packed route (tested),
  but on CPU the backward pass through packed sequences is 5-8x slower (measured here: 1.5 s against
  0.2 s per batch of 64 x 256), which alone would blow the 40-minute budget of a full IMDB run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD_ID = 0


@dataclass(frozen=True)
class GRUConfig:
    vocab_size: int
    n_classes: int
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3
    embedding_dropout: float = 0.0  # drops whole token vectors while training (a word is missing, not one of its features)
    pooling: Literal["last", "mean", "max"] = "mean"
    packed: bool = False

    @property
    def width(self) -> int:
        """Width H of the GRU output at each step."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict:
        return asdict(self)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's real steps, leave its padding where it is: (B, T, D) → (B, T, D)."""
    B, T = x.shape[:2]
    steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
    last = (lengths.to(x.device) - 1)[:, None]  # (B, 1)
    idx = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, idx[..., None].expand_as(x))  # (B, T, D)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded steps: (B,) lengths → (B, T)."""
    steps = torch.arange(max_len, device=lengths.device)  # (T,)
    return steps[None, :] >= lengths[:, None]  # (B, T)


class GRUEncoder(nn.Module):
    """Token ids → contextual states, one per real token (padded steps come back as zeros)."""

    def __init__(self, cfg: GRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=PAD_ID)
        self.gru = nn.GRU(
            cfg.embedding_dim, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)  # (B, T, E)
        if self.training and self.cfg.embedding_dropout > 0:
            keep = torch.rand(x.shape[:2], device=x.device) >= self.cfg.embedding_dropout  # (B, T)
            x = x * keep[..., None] / (1 - self.cfg.embedding_dropout)  # (B, T, E)
        if self.cfg.packed:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)  # (sum(lengths), E)
            out, _ = self.gru(packed)  # (sum(lengths), H)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))  # (B, T, H)
            return h
        for layer in range(self.cfg.num_layers):
            if layer:
                x = F.dropout(x, self.gru.dropout, self.training)  # (B, T, H)
            h = self._direction(x, layer, "")  # (B, T, H/dirs)
            if self.cfg.bidirectional:
                back = self._direction(reverse_within_length(x, lengths), layer, "_reverse")  # (B, T, H/2)
                h = torch.cat([h, reverse_within_length(back, lengths)], dim=-1)  # (B, T, H)
            x = h  # (B, T, H)
        pad = padding_mask(lengths.to(x.device), x.size(1))  # (B, T)
        return x.masked_fill(pad[..., None], 0.0)  # (B, T, H), zeros at padding as the packed route gives

    def _direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One direction of one layer of `self.gru`, run left to right over x: (B, T, D) → (B, T, H/dirs)."""
        g = self.gru
        weights = [getattr(g, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.size(0), g.hidden_size)  # (1, B, H/dirs)
        # the kernel nn.GRU itself calls, with this direction's weights only
        out, _ = torch._VF.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)  # (B, T, H/dirs)
        return out


class Pooling(nn.Module):
    """One vector per review from its real steps only: the last real step, their mean or their max."""

    def __init__(self, kind: str, bidirectional: bool) -> None:
        super().__init__()
        self.kind = kind
        self.bidirectional = bidirectional

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, T, H = h.shape  # (B, T, H)
        pad = padding_mask(lengths, T)  # (B, T)
        if self.kind == "mean":
            summed = h.masked_fill(pad[..., None], 0.0).sum(dim=1)  # (B, H)
            return summed / lengths[:, None].to(h.dtype)  # (B, H)
        if self.kind == "max":
            return h.masked_fill(pad[..., None], float("-inf")).max(dim=1).values  # (B, H)
        # "last": the forward direction's state at the last real token; the backward direction's final
        # state sits at step 0 (it read the review right to left).
        idx = (lengths - 1).view(B, 1, 1).expand(B, 1, H)  # (B, 1, H)
        last = h.gather(1, idx).squeeze(1)  # (B, H)
        if not self.bidirectional:
            return last  # (B, H)
        half = H // 2
        return torch.cat([last[:, :half], h[:, 0, half:]], dim=-1)  # (B, H)


class GRUClassifier(nn.Module):
    def __init__(self, cfg: GRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = GRUEncoder(cfg)
        self.pool = Pooling(cfg.pooling, cfg.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encoder(ids, lengths)  # (B, T, H)
        v = self.pool(h, lengths)  # (B, H)
        return self.head(self.dropout(v))  # (B, C)
