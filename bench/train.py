"""train: seconds per epoch and tokens/s of each model, length bucketing against fixed-length padding.

Three batchings of the same training reviews, same model, same seed:
  bucketed      models/batching.bucket_batches(bucketing=True): similar lengths together, padded to the
                batch's longest review (what training uses, train.bucketing: true)
  random        bucket_batches(bucketing=False): random batches, padded to the batch's longest review
  fixed_max     random batches padded to tokenize.max_length (the usual fixed-shape recipe): the baseline
A fixed number of batches is timed after warm-up batches (forward, backward, clip, AdamW step, as in
models/train_loop.py); seconds per epoch are extrapolated by padded positions (B x T), which is what a
batch costs: s_per_epoch from the median seconds per padded position over the timed batches (robust to
stalls when other work shares the cores), s_per_epoch_mean from their total. The padding share is counted
exactly over every batch of the epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import in_child, ratio, rss_mb, timer

MODES = ("bucketed", "random", "fixed_max")


def _padding(lengths, batches, max_length: int | None) -> tuple[int, int]:
    real = padded = 0
    for idx in batches:
        lens = lengths[idx]
        width = max_length if max_length else int(lens.max())
        real += int(lens.sum())
        padded += len(idx) * width
    return real, padded


def _measure(tokens: str, name: str, hyper: dict, mode: str, batch_size: int, max_length: int, threads: int,
             lr: float, weight_decay: float, grad_clip: float, seed: int, warmup: int, measure: int) -> dict[str, Any]:
    import numpy as np
    import polars as pl
    import torch
    from torch import nn
    from torch.nn import functional as F

    from models.registry import build_model
    from models.batching import TokenSet, bucket_batches
    from models.train_loop import seed_everything, setup_torch

    df = pl.read_parquet(tokens).filter(pl.col("split") == "train")
    data = TokenSet.from_frame(df)
    vocab = int(data.ids.max()) + 1
    seed_everything(seed)
    device = setup_torch("cpu", threads)
    model = build_model(name, vocab_size=max(vocab, 2), n_classes=2, **hyper).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = bucket_batches(data.lengths, batch_size, seed=seed * 1000 + 1, bucketing=(mode == "bucketed"))
    fixed = max_length if mode == "fixed_max" else None
    real_epoch, padded_epoch = _padding(data.lengths, batches, fixed)
    base = rss_mb()

    def step(idx) -> tuple[int, int]:
        ids, lengths, labels = data.batch(idx)
        if fixed and ids.size(1) < fixed:
            ids = F.pad(ids, (0, fixed - ids.size(1)), value=0)  # <pad> = 0
        logits = model(ids, lengths)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return int(lengths.sum()), ids.numel()

    order = [batches[i % len(batches)] for i in range(warmup + measure)]  # cycles when the set is small
    for idx in order[:warmup]:
        step(idx)
    real = padded = 0
    per_position = []  # seconds per padded position of each timed batch
    with timer() as t:
        for idx in order[warmup:]:
            with timer() as tb:
                r, p = step(idx)
            real, padded = real + r, padded + p
            per_position.append(tb["s"] / p)
    s = t["s"]
    median = float(np.median(per_position))
    return {
        "batches_timed": measure,
        "warmup_batches": warmup,
        "seconds_timed": round(s, 3),
        "s_per_batch": round(s / measure, 4),
        "tokens_per_s": round(real / s, 1),
        "positions_per_s": round(padded / s, 1),
        "epoch_batches": len(batches),
        "epoch_docs": len(data),
        "epoch_real_tokens": real_epoch,
        "epoch_padded_positions": padded_epoch,
        "padding_share": round(1 - real_epoch / padded_epoch, 4),
        "s_per_epoch": round(median * padded_epoch, 3),
        "s_per_epoch_mean": round(s * padded_epoch / padded, 3),
        "torch_threads": torch.get_num_threads(),
        "flush_denormal": True,
        "rss_before_mb": base,
    }


QUICK_MODELS = {"gru": {"embedding_dim": 32, "hidden_size": 32},
                "gru_attention": {"embedding_dim": 32, "hidden_size": 32, "heads": 2},
                "cnn": {"embedding_dim": 32, "filters": 32},
                "transformer": {"embedding_dim": 32, "heads": 2, "ff": 64}}


def run(work: Path, p, quick: bool) -> dict[str, Any]:
    tokens = str(work / "tokens.parquet")
    warmup, measure = (1, 3) if quick else (2, 20)
    out: dict[str, Any] = {"batch_size": p.train.batch_size, "max_length": p.tokenize.max_length,
                           "threads": p.train.threads, "models": {}}
    from models.registry import architecture

    for name in p.train.models:  # the models the pipeline trains (params.yaml train.models)
        hyper = {**architecture(name, getattr(p.model, name).model_dump()), **(QUICK_MODELS.get(name, {}) if quick else {})}
        rows = {mode: in_child(_measure, tokens, name, hyper, mode, p.train.batch_size, p.tokenize.max_length,
                               p.train.threads, p.train.lr, p.train.weight_decay, p.train.grad_clip, p.seed,
                               warmup, measure)
                for mode in MODES}
        out["models"][name] = {
            "hyper": hyper,
            **rows,
            "speedup_bucketed_vs_fixed": ratio(rows["fixed_max"]["s_per_epoch"], rows["bucketed"]["s_per_epoch"]),
            "speedup_bucketed_vs_random": ratio(rows["random"]["s_per_epoch"], rows["bucketed"]["s_per_epoch"]),
        }
    return out
