"""TransformerClassifier: a small encoder-only Transformer, pre-norm, sized for a CPU.

    ids → embedding (+ positions) → N x [x + SelfAttention(LayerNorm(x)); x + MLP(LayerNorm(x))]
        → LayerNorm → pooling over real tokens (mean or learned attention) → dropout → linear

Shapes: B batch, T the batch's longest review (tokens), D model width (= embedding width E), nh heads of
width hd = D / nh, C classes. Token id 0 is `<pad>`; `lengths` says how many tokens are real.

Padding never changes a prediction: padded keys get -inf scores (no real token attends to padding),
everything else works per position, and the pooling weighs real tokens only. Two switches exist only to
show, in tests and in class, what breaks without them: `mask_padding: False` drops the key padding mask
(padding then changes predictions) and `scale: False` drops the 1/sqrt(hd) scaling of the scores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from models.attention import AttentionPooling, SinusoidalPositions
from models.gru import PAD_ID, padding_mask


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    n_classes: int
    embedding_dim: int = 64  # D: the model width is the embedding width, so pretrained vectors fit as they are
    layers: int = 2
    heads: int = 4
    ff: int = 128  # hidden width of each block's MLP
    dropout: float = 0.1  # on each residual branch and on the pooled vector
    embedding_dropout: float = 0.0  # drops whole token vectors while training
    positional_encoding: Literal["sinusoidal", "learned", "none"] = "sinusoidal"
    max_len: int = 512  # longest review the positions cover; >= tokenize.max_length
    pooling: Literal["mean", "attention"] = "mean"
    scale: bool = True  # scores / sqrt(hd); False only to show why it is there
    mask_padding: bool = True  # key padding mask; False only to show why it is there

    def __post_init__(self) -> None:
        if self.embedding_dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide the model width embedding_dim={self.embedding_dim}")

    @property
    def width(self) -> int:
        return self.embedding_dim

    def to_dict(self) -> dict:
        return asdict(self)


class LearnedPositions(nn.Module):
    """One trained vector per position (BERT, GPT-2), added to the token vectors."""

    def __init__(self, width: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, width) * 0.02)  # (L, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.size(1)]  # (B, T, D)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; `keep` (B, T) says which keys may be attended to."""

    def __init__(self, width: int, heads: int, scale: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1 / math.sqrt(width // heads) if scale else 1.0
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, need_weights: bool = False):
        B, T, D = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, T, D)
        q = q.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # (B, nh, T, hd)
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, T): True = may attend
        if need_weights:  # spelled out, to hand the weights back
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, nh, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))  # (B, nh, T, T)
            weights = F.softmax(scores, dim=-1)  # (B, nh, T, T)
            y = weights @ v  # (B, nh, T, hd)
        else:  # the same computation, fused: faster on CPU and it never holds (B, nh, T, T)
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale), None  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, D)  # (B, T, D)
        return self.proj(y), weights  # (B, T, D), (B, nh, T, T) or None


class Block(nn.Module):
    """Pre-norm Transformer block: attention then MLP, each on a LayerNorm'd copy, each added back."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width)
        self.attention = SelfAttention(cfg.width, cfg.heads, cfg.scale)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, cfg.ff), nn.GELU(), nn.Linear(cfg.ff, cfg.width))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, need_weights: bool = False):
        a, weights = self.attention(self.norm1(x), keep, need_weights)  # (B, T, D), (B, nh, T, T) or None
        x = x + self.dropout(a)  # (B, T, D)
        x = x + self.dropout(self.mlp(self.norm2(x)))  # (B, T, D)
        return x, weights


class TransformerEncoder(nn.Module):
    """Token ids → contextual vectors (B, T, D); also the last block's attention weights when asked."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=PAD_ID)
        if cfg.positional_encoding == "sinusoidal":
            self.positions = SinusoidalPositions(cfg.width, cfg.max_len)
        elif cfg.positional_encoding == "learned":
            self.positions = LearnedPositions(cfg.width, cfg.max_len)
        else:  # "none": attention alone cannot tell word order (a bag of words with context)
            self.positions = nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, need_weights: bool = False):
        if ids.size(1) > self.cfg.max_len:
            raise ValueError(f"a review of {ids.size(1)} tokens is longer than model.transformer.max_len "
                             f"({self.cfg.max_len}): raise max_len to at least tokenize.max_length")
        x = self.embedding(ids)  # (B, T, D)
        if self.training and self.cfg.embedding_dropout > 0:
            drop = torch.rand(x.shape[:2], device=x.device) >= self.cfg.embedding_dropout  # (B, T)
            x = x * drop[..., None] / (1 - self.cfg.embedding_dropout)  # (B, T, D)
        x = self.positions(x)  # (B, T, D)
        keep = ~padding_mask(lengths, ids.size(1)) if self.cfg.mask_padding else None  # (B, T) or None
        weights = None
        for block in self.blocks:
            x, weights = block(x, keep, need_weights)  # (B, T, D), (B, nh, T, T) or None
        return self.norm(x), weights  # (B, T, D), the last block's (B, nh, T, T) or None


class MeanPooling(nn.Module):
    """The mean of the real tokens' vectors, written as attention pooling with equal weights 1/L."""

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = (~pad).to(h.dtype)  # (B, T)
        weights = real / real.sum(dim=1, keepdim=True)  # (B, T): 1/L on real tokens, 0 on padding
        return (weights[:, :, None] * h).sum(dim=1), weights  # (B, D), (B, T)


class TransformerClassifier(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TransformerEncoder(cfg)
        self.pool = AttentionPooling(cfg.width) if cfg.pooling == "attention" else MeanPooling()
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False):
        h, self_weights = self.encoder(ids, lengths, need_weights=return_attention)  # (B, T, D), (B, nh, T, T)
        v, pool_weights = self.pool(h, padding_mask(lengths, ids.size(1)))  # (B, D), (B, T)
        logits = self.head(self.dropout(v))  # (B, C)
        if return_attention:
            return logits, {"self": self_weights, "pool": pool_weights}  # (B, C), {(B, nh, T, T), (B, T)}
        return logits  # (B, C)
