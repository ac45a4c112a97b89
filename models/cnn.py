"""CNNClassifier (Kim, 2014): embedding → parallel 1-D convolutions of several widths → ReLU
→ max over time (real windows only) → concatenate → dropout → linear.

Shapes: B batch, T the batch's longest review (tokens), E embedding width, F filters per width, K one
kernel width, nK the number of widths, C classes. Token id 0 is `<pad>`; `lengths` says how many tokens
are real.

A filter of width K is an n-gram detector: it slides over every window of K consecutive tokens and the max
over time keeps its best match anywhere in the review, so word order counts only within K tokens.

Padding never changes a prediction:
- padded positions are set to zero vectors before the convolution, whatever `<pad>`'s vector holds;
- a review of L tokens has the windows starting at 0 .. L-K (all inside it); windows that start later
  reach into padding and get -inf before the max, so the max never sees them;
- a review shorter than K (L < K) has no whole window, so it keeps one: the window at 0, its missing
  tokens read as zeros. The time axis is padded up to K inside `forward` so that window always exists.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.gru import PAD_ID, padding_mask


@dataclass(frozen=True)
class CNNConfig:
    vocab_size: int
    n_classes: int
    embedding_dim: int = 64
    widths: tuple[int, ...] = (3, 4, 5)  # kernel widths K, one convolution each
    filters: int = 100  # F filters per width
    dropout: float = 0.5  # on the pooled features, before the linear head (Kim used 0.5)
    embedding_dropout: float = 0.0  # drops whole token vectors while training

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(k) for k in self.widths))  # params.yaml gives a list
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths={self.widths}: give at least one kernel width, each >= 1")

    @property
    def width(self) -> int:
        """Width nK x F of the pooled feature vector."""
        return len(self.widths) * self.filters

    def to_dict(self) -> dict:
        return asdict(self)


def real_windows(lengths: torch.Tensor, n_windows: int, k: int) -> torch.Tensor:
    """True at the windows of width k a review really has: starts 0 .. max(L-k, 0). (B,) → (B, n_windows)."""
    starts = torch.arange(n_windows, device=lengths.device)  # (W,)
    last = (lengths - k).clamp(min=0)  # (B,) the last start whose window ends inside the review
    return starts[None, :] <= last[:, None]  # (B, W)


class ConvEncoder(nn.Module):
    """Token ids → one feature map per kernel width, -inf at windows the review does not have."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embedding_dim, cfg.filters, k) for k in cfg.widths)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        x = self.embedding(ids)  # (B, T, E)
        if self.training and self.cfg.embedding_dropout > 0:
            keep = torch.rand(x.shape[:2], device=x.device) >= self.cfg.embedding_dropout  # (B, T)
            x = x * keep[..., None] / (1 - self.cfg.embedding_dropout)  # (B, T, E)
        pad = padding_mask(lengths, ids.size(1))  # (B, T)
        x = x.masked_fill(pad[..., None], 0.0).transpose(1, 2)  # (B, E, T): Conv1d wants channels first
        x = F.pad(x, (0, max(0, max(self.cfg.widths) - x.size(-1))))  # (B, E, T'), T' = max(T, widest K)
        maps = []
        for conv in self.convs:
            c = F.relu(conv(x))  # (B, F, W), W = T' - K + 1 window starts
            real = real_windows(lengths, c.size(-1), conv.kernel_size[0])  # (B, W)
            maps.append(c.masked_fill(~real[:, None, :], float("-inf")))  # (B, F, W)
        return maps  # nK x (B, F, W_K)


class CNNClassifier(nn.Module):
    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.n_classes)

    def pool(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Max over time of each feature map, and where each max was found (the winning window's start)."""
        best = [m.max(dim=-1) for m in maps]  # nK x ((B, F), (B, F))
        pooled = torch.cat([b.values for b in best], dim=1)  # (B, nK*F)
        return pooled, [b.indices for b in best]  # (B, nK*F), nK x (B, F)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        maps = self.encoder(ids, lengths)  # nK x (B, F, W_K)
        v, _ = self.pool(maps)  # (B, nK*F)
        return self.head(self.dropout(v))  # (B, C)

    @torch.no_grad()
    def token_contributions(self, ids: torch.Tensor, lengths: torch.Tensor,
                            target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and each token's share (B, T) of the target class's logit (default: the predicted one).

        The logit minus its bias is a sum over filters of weight x pooled value, and each pooled value came
        from one window. Each filter's term is split evenly over the real tokens of its winning window, so
        the shares of a review add up to its logit minus the bias (in eval mode; dropout is off then).
        """
        B, T = ids.shape  # (B, T)
        maps = self.encoder(ids, lengths)  # nK x (B, F, W_K)
        v, starts = self.pool(maps)  # (B, nK*F), nK x (B, F)
        logits = self.head(self.dropout(v))  # (B, C)
        target = logits.argmax(-1) if target is None else target  # (B,)
        terms = (self.head.weight[target] * v).split(self.cfg.filters, dim=1)  # nK x (B, F)
        steps = torch.arange(T, device=ids.device)  # (T,)
        shares = torch.zeros(B, T, device=ids.device)  # (B, T)
        for k, term, start in zip(self.cfg.widths, terms, starts):
            inside = (steps[None, None, :] >= start[..., None]) & (steps[None, None, :] < start[..., None] + k)  # (B, F, T)
            inside = inside & (steps[None, None, :] < lengths[:, None, None])  # (B, F, T): real tokens only
            per_token = term / inside.sum(-1).clamp(min=1)  # (B, F)
            shares += (inside * per_token[..., None]).sum(1)  # (B, T)
        return logits, shares  # (B, C), (B, T)
