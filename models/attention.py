"""AttentionGRUClassifier: the GRU encoder, then multi-head self-attention and attention pooling.

    ids → GRUEncoder → (+ sinusoidal positions) → self-attention (key padding mask) → residual + layer norm
        → attention pooling over real tokens → dropout → linear

Shapes as in models/gru.py, plus nh heads of width hd = H / nh. Padded keys get -inf scores, so no real
token ever attends to padding, and the pooling weights are zero on padding: the "where it looked" that the
report and `predict` show is a distribution over real tokens only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.gru import GRUConfig, GRUEncoder, padding_mask


@dataclass(frozen=True)
class AttentionGRUConfig(GRUConfig):
    heads: int = 4
    positional_encoding: bool = False
    attention_dropout: float = 0.0  # on the attention weights; > 0 leaves the fused CPU kernel (6x slower)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"heads={self.heads} must divide the GRU output width {self.width}")


class SinusoidalPositions(nn.Module):
    """Adds the fixed sin/cos position signal of "Attention is all you need" (no parameters)."""

    def __init__(self, width: int, max_len: int = 4096) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
        freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))  # (H/2,)
        pe = torch.zeros(max_len, width)  # (L, H)
        pe[:, 0::2] = torch.sin(pos * freq)  # (L, H/2)
        pe[:, 1::2] = torch.cos(pos * freq[: width // 2])  # (L, H/2)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.pe[: h.size(1)]  # (B, T, H)


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over nh heads; padded keys are masked out."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        # Dropout on the attention weights. Off by default: with it, CPU attention falls back from the fused
        # kernel to one that holds (B, nh, T, T) several times over, forward and backward (measured 6.5x
        # slower for B=64, T=300); the model regularises after the attention instead (attn_dropout).
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, pad: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, H = h.shape  # (B, T, H)
        q, k, v = self.qkv(h).split(H, dim=-1)  # 3 x (B, T, H)
        q = q.view(B, T, self.heads, H // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.heads, H // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.heads, H // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        if need_weights:  # spelled out, to hand the weights back
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(H // self.heads)  # (B, nh, T, T)
            scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))  # (B, nh, T, T)
            weights = F.softmax(scores, dim=-1)  # (B, nh, T, T)
            y = self.dropout(weights) @ v  # (B, nh, T, hd)
        else:  # the same computation, fused: about twice as fast on CPU and it never holds (B, nh, T, T)
            keep = ~pad[:, None, None, :]  # (B, 1, 1, T)
            p = self.dropout.p if self.training else 0.0
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p), None  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, H)  # (B, T, H)
        return self.proj(y), weights  # (B, T, H), (B, nh, T, T) or None


class AttentionPooling(nn.Module):
    """A learned query scores each token; softmax over the real tokens; the weighted sum of their states."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(h).squeeze(-1)  # (B, T)
        weights = F.softmax(scores.masked_fill(pad, float("-inf")), dim=-1)  # (B, T)
        pooled = (weights[:, :, None] * h).sum(dim=1)  # (B, H)
        return pooled, weights  # (B, H), (B, T)


class AttentionGRUClassifier(nn.Module):
    def __init__(self, cfg: AttentionGRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = GRUEncoder(cfg)
        self.positions = SinusoidalPositions(cfg.width) if cfg.positional_encoding else nn.Identity()
        self.attention = MultiHeadSelfAttention(cfg.width, cfg.heads, cfg.attention_dropout)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.width)
        self.pool = AttentionPooling(cfg.width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False):
        pad = padding_mask(lengths, ids.size(1))  # (B, T)
        h = self.positions(self.encoder(ids, lengths))  # (B, T, H)
        a, self_weights = self.attention(h, pad, need_weights=return_attention)  # (B, T, H), (B, nh, T, T)
        h = self.norm(h + self.attn_dropout(a))  # (B, T, H)
        v, pool_weights = self.pool(h, pad)  # (B, H), (B, T)
        logits = self.head(self.dropout(v))  # (B, C)
        if return_attention:
            return logits, {"self": self_weights, "pool": pool_weights}  # (B, C), {(B, nh, T, T), (B, T)}
        return logits  # (B, C)
