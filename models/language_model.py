"""The classifiers' GRU encoder, pretrained as a language model in both directions (Dai & Le, 2015).

The forward direction's state after token t predicts token t+1; the backward direction's state at token t
(it has read the review from its end back to t) predicts token t-1. Neither ever sees the token it
predicts. The scores are dot products with the encoder's own embedding (tied weights), so learning to
predict a word also moves that word's vector. A softmax over all V tokens per position would cost more than
the GRU itself; a sampled softmax scores the true token against K negatives drawn once per batch from the
unigram^0.75 distribution, corrected by log(K q) so it estimates the full softmax (Jean et al., 2015).

Shapes: B batch, T longest review, H GRU output (2 x Hd, Hd per direction), E embedding width, V vocabulary,
N positions that have a target, K negatives.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.batching import TokenFile, TokenSet, TokenSink, bucket_batches, starts_of
from models.gru import GRUConfig, GRUEncoder, padding_mask
from models.train_loop import seed_everything


class BidirectionalLM(nn.Module):
    def __init__(self, encoder: GRUEncoder, unigram_counts: torch.Tensor, negatives: int = 512) -> None:
        super().__init__()
        if not encoder.cfg.bidirectional:
            raise ValueError("the language-model pretraining trains a bidirectional encoder (both directions)")
        self.encoder = encoder
        half, width = encoder.cfg.hidden_size, encoder.cfg.embedding_dim
        self.from_forward = nn.Linear(half, width)  # forward state → embedding space
        self.from_backward = nn.Linear(half, width)
        self.bias = nn.Parameter(torch.zeros(encoder.cfg.vocab_size))  # (V,)
        q = unigram_counts.double().clamp(min=1) ** 0.75
        q[:2] = 0.0  # never sample <pad> or <unk>
        self.register_buffer("q", (q / q.sum()).float(), persistent=False)  # (V,)
        self.negatives = negatives

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean sampled-softmax loss over every position of both directions that has a target."""
        B, T = ids.shape
        h = self.encoder(ids, lengths)  # (B, T, H)
        half = h.size(-1) // 2
        has_next = ~padding_mask(lengths - 1, T - 1)  # (B, T-1): steps t with a real token t+1
        fwd = h[:, :-1, :half][has_next]  # (Nf, Hd): state after t
        bwd = h[:, 1:, half:][has_next]  # (Nb, Hd): backward state at t+1, which has read t+1 .. end
        states = torch.cat([self.from_forward(fwd), self.from_backward(bwd)])  # (N, E)
        targets = torch.cat([ids[:, 1:][has_next], ids[:, :-1][has_next]])  # (N,)
        # drawn on the CPU with a CPU generator whatever the device, so a seed gives the same negatives anywhere
        neg = torch.multinomial(self.q.cpu(), self.negatives, replacement=True, generator=generator).to(ids.device)  # (K,)
        emb = self.encoder.embedding.weight  # (V, E)
        log_kq = torch.log(self.q * self.negatives + 1e-12)  # (V,)
        true = (states * emb[targets]).sum(-1) + self.bias[targets] - log_kq[targets]  # (N,)
        sampled = states @ emb[neg].T + self.bias[neg] - log_kq[neg]  # (N, K)
        sampled = sampled.masked_fill(neg[None, :] == targets[:, None], float("-inf"))  # a negative that is the target
        logits = torch.cat([true[:, None], sampled], dim=1)  # (N, 1 + K)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=ids.device))


def train_language_model(lm: BidirectionalLM, data: TokenSet, epochs: int, lr: float, batch_size: int, seed: int,
                         log: Callable[[str], None] = print, device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """Seeded AdamW over `data` for `epochs`, learning rate decaying linearly to 0; the mean loss per epoch.

    Deterministic kernels, as in training: on more than one CPU thread the backward of `emb[targets]` (an
    accumulating index_put) adds its rows in whichever order the threads finish, so without them two runs
    of one seed gave other weights (tests/test_language_model.py)."""
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    lm.to(device)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(data) // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / steps))
    history = []
    lm.train()
    for epoch in range(1, epochs + 1):
        t0, total, n = time.perf_counter(), 0.0, 0
        batches = bucket_batches(data.lengths, batch_size, seed=seed * 1000 + epoch)
        for step, idx in enumerate(batches, start=1):
            ids, lengths, _ = data.batch(idx)  # (B, T), (B,)
            loss = lm(ids.to(device), lengths.to(device), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total, n = total + loss.item(), n + 1
            if step % max(len(batches) // 10, 1) == 0:
                log(f"language model epoch {epoch}: {step}/{len(batches)} batches, loss {total / n:.3f}, "
                    f"{time.perf_counter() - t0:.0f} s")
        history.append({"epoch": epoch, "loss": round(total / n, 4)})  # no seconds: the outputs stay byte-identical
        log(f"language model epoch {epoch}: loss {total / n:.4f}, {time.perf_counter() - t0:.0f} s")
    return history


def cut_documents(ids: np.ndarray, starts: np.ndarray, max_length: int, head: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each document of the flat corpus cut to at most `max_length` tokens, the first `head` of them from its
    start and the rest from its end (flows/tokenize.truncate on token lists, vectorised): ids (N',), starts
    and lengths (n_docs,). head = max_length keeps the start only, head = 0 the end only."""
    lengths = np.diff(np.append(starts, len(ids)))  # (n_docs,)
    pos = np.arange(len(ids)) - np.repeat(starts, lengths)  # (N,) each token's position in its document
    length = np.repeat(lengths, lengths)  # (N,) its document's length
    keep = (length <= max_length) | (pos < head) | (pos >= length - (max_length - head))  # (N,)
    cut = np.minimum(lengths, max_length)  # (n_docs,)
    return ids[keep], starts_of(cut), cut


def cut_corpus(ids: np.ndarray, starts: np.ndarray, max_length: int, head: int, spill: Path | None = None,
               docs: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`cut_documents` over `docs` documents at a time; with `spill`, the cut ids go to that file (uint32) and come
    back as a TokenFile (models/batching.py), so neither the corpus nor its cut need fit in memory."""
    with TokenSink(spill) as sink:
        for d0 in range(0, len(starts), docs):
            d1 = min(d0 + docs, len(starts))
            lo, hi = int(starts[d0]), int(starts[d1]) if d1 < len(starts) else len(ids)
            cut, _, lengths = cut_documents(np.asarray(ids[lo:hi]), starts[d0:d1] - lo, max_length, head)
            sink.add(cut, lengths)
    return sink.finish()


def pretrain_encoder(vectors: torch.Tensor, counts: torch.Tensor, ids: np.ndarray, starts: np.ndarray, *,
                     max_length: int, hidden_size: int, negatives: int, epochs: int, lr: float, batch_size: int,
                     seed: int, head: int | None = None, device: torch.device | str = "cpu",
                     log: Callable[[str], None] = print, spill: Path | None = None) -> dict:
    """The GRU encoder both GRU classifiers share, trained as a language model from the embedding `vectors`
    (V, E) on the part of each document the classifiers will read: at most `max_length` tokens, the first
    `head` (default: all of them) from its start, the rest from its end. `ids` (N,) are all documents one
    after another, `starts` (n_docs,) where each begins; `counts` (V,) each token's frequency.
    `spill`: a file for the cut documents (`cut_corpus`), when they need not be in memory.
    Returns the encoder's weights, the per-epoch losses, what it read per epoch and the config the
    classifiers must match."""
    ids, starts, lengths = cut_corpus(ids, starts, max_length, max_length if head is None else head, spill)
    keep = lengths >= 2  # a one-token document has nothing to predict
    data = TokenSet(ids, starts[keep], lengths[keep], np.zeros(int(keep.sum()), dtype=np.int64))
    torch.manual_seed(seed)
    dim = vectors.shape[1]
    encoder = GRUEncoder(GRUConfig(vocab_size=len(vectors), n_classes=1, embedding_dim=dim,
                                   hidden_size=hidden_size, bidirectional=True, dropout=0.0))
    with torch.no_grad():
        encoder.embedding.weight.copy_(vectors)
    lm = BidirectionalLM(encoder, counts, negatives)
    history = train_language_model(lm, data, epochs, lr, batch_size, seed, log=log, device=device)
    if isinstance(ids, TokenFile):
        ids.close()
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    read = {"documents": len(data), "tokens": int(data.lengths.sum()), "longest": int(data.lengths.max(initial=0))}
    return {"embedding": state["embedding.weight"], "encoder": state, "history": history, "read": read,
            "encoder_config": {"embedding_dim": dim, "hidden_size": hidden_size, "num_layers": 1, "bidirectional": True}}
