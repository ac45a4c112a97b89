"""One training loop for every model: seeded, AdamW, early stopping on validation accuracy, best weights kept.

Same params + seed → same weights and metrics: python, numpy and torch are seeded, torch runs its
deterministic algorithms, and each epoch's batch order comes from (seed, epoch) alone, so a run resumed
from its per-epoch checkpoint continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional as F

from models.batching import TokenSet, bucket_batches, sorted_batches
from reweigh.io import atomic_path

# Flush denormals before torch starts its CPU worker threads: a thread takes this setting from the thread that
# starts it, and torch.set_flush_denormal sets the calling thread alone, so a worker started earlier computes
# with denormals (slower on a GRU's saturated gates, and other numbers). Every stage that computes with torch
# (train, pretrain, predict) imports this module before it builds a model; setup_torch checks.
torch.set_flush_denormal(True)


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int = 64
    epochs: int = 5
    lr: float = 2e-3
    lr_schedule: str = "plateau"  # plateau: x lr_decay after an epoch without improvement | constant | linear
    lr_decay: float = 0.5
    embedding_lr_scale: float = 1.0  # the token embedding's lr = lr x this; 0 freezes it (a pretrained one stays put)
    weight_decay: float = 0.01
    patience: int = 2
    grad_clip: float = 1.0
    adversarial: float = 0.0  # > 0: adversarial training on the token embeddings (Miyato et al. 2017), this strong
    bucketing: bool = True
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # 0 = all cores
    seed: int = 42
    resume: bool = False
    checkpoint: Path | None = None  # saved after every epoch; read back when `resume`
    fingerprint: str = ""  # what a checkpoint must match to be resumed (model + train params)


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0
    stop_reason: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def all_threads_flush_denormals() -> bool:
    """Whether every torch CPU thread flushes denormals to zero: a denormal times 2 is 0 only on a thread
    that does, and an elementwise op this large is split across all of them."""
    n = torch.get_num_threads() << 17  # far above torch's grain size, so every thread takes a slice
    x = torch.ones(n, dtype=torch.int32).view(torch.float32)  # (n,) the smallest denormal, made without arithmetic
    return int((x * 2.0).count_nonzero()) == 0


def setup_torch(device: str = "auto", threads: int = 0) -> torch.device:
    """Flush denormals (a CPU GRU spends most of its time on them otherwise), set threads, pick the device."""
    torch.set_flush_denormal(True)
    cores = os.cpu_count() or 1
    torch.set_num_threads(min(threads, cores) if threads else cores)  # more threads than cores only stall
    if torch.get_num_threads() > 1 and not all_threads_flush_denormals():
        warnings.warn("some of torch's CPU threads do not flush denormals: they started before `models.train_loop` was "
                      "imported (which sets it for the threads started after). Training runs slower "
                      "and gives other numbers than it would otherwise: import models before any torch "
                      "computation, or set train.threads: 1", RuntimeWarning, stacklevel=2)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available; set train.device: auto or cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def train(model: nn.Module, train_set: TokenSet, val_set: TokenSet, cfg: LoopConfig,
          log: Callable[[str], None] = print, on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Fit with early stopping on validation accuracy; `on_epoch(row)` sees each epoch's history row as it ends
    (the rows of a resumed checkpoint first), which is how the train stage logs to DVCLive."""
    seed_everything(cfg.seed)
    device = setup_torch(cfg.device, cfg.threads)
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _fresh_state(model)
    scheduler = _lr_scheduler(optimizer, cfg, steps_per_epoch=-(-len(train_set) // cfg.batch_size), state=state)
    if cfg.resume and cfg.checkpoint is not None:
        state.update(_load_checkpoint(cfg, model, optimizer, scheduler, state, log))
    started = time.perf_counter() - state["seconds"]
    resumed_from = state["epoch"]
    for row in state["history"] if on_epoch else ():
        on_epoch(row)

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["bad_epochs"] >= cfg.patience:
            break
        t0 = time.perf_counter()
        train_loss, train_acc = _train_epoch(model, optimizer, scheduler, train_set, cfg, device, epoch)
        val_loss, val_acc = evaluate(model, val_set, cfg.batch_size, device)
        row = {"epoch": epoch, "train_loss": round(train_loss, 5), "train_accuracy": round(train_acc, 5),
               "val_loss": round(val_loss, 5), "val_accuracy": round(val_acc, 5),
               "lr": round(scheduler.get_last_lr()[0], 8), "seconds": round(time.perf_counter() - t0, 1)}
        state["history"].append(row)
        if on_epoch:
            on_epoch(row)
        improved = val_acc > state["best_accuracy"]
        if improved:
            state.update(best_accuracy=val_acc, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
            state["lr_scale"] *= cfg.lr_decay if cfg.lr_schedule == "plateau" else 1.0
        state["epoch"] = epoch
        log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}{'  (best)' if improved else ''} | {row['seconds']:.0f} s")
        state["seconds"] = time.perf_counter() - started
        if cfg.checkpoint is not None:
            _save_checkpoint(cfg, model, optimizer, scheduler, state)
        if state["bad_epochs"] >= cfg.patience:
            log(f"early stop: no validation improvement for {cfg.patience} epoch(s); best epoch {state['best_epoch']}")
            break

    return TrainResult(best_state=state["best_state"], best_epoch=state["best_epoch"], epochs_run=state["epoch"],
                       history=state["history"], seconds=time.perf_counter() - started, resumed_from=resumed_from,
                       stop_reason=stop_reason(state, cfg))


def _param_groups(model: nn.Module, cfg: LoopConfig) -> list[dict[str, Any]]:
    """Two groups: everything else at lr, the token embedding at lr x embedding_lr_scale (0: frozen)."""
    embedding = [p for n, p in model.named_parameters() if n.endswith("embedding.weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("embedding.weight")]
    if cfg.embedding_lr_scale == 0:
        for p in embedding:
            p.requires_grad_(False)
        return [{"params": rest}]
    return [{"params": rest}, {"params": embedding, "lr": cfg.lr * cfg.embedding_lr_scale}]


def stop_reason(state: dict[str, Any], cfg: LoopConfig) -> str:
    """Why training ended, in words the report can print."""
    if state["bad_epochs"] >= cfg.patience:
        return (f"early stopping: validation accuracy did not improve for {cfg.patience} epoch(s) after its best, "
                f"epoch {state['best_epoch']}")
    if state["best_epoch"] == state["epoch"]:
        return (f"hit the cap of train.epochs={cfg.epochs} while validation accuracy was still rising: "
                f"raise train.epochs")
    return f"hit the cap of train.epochs={cfg.epochs} ({state['bad_epochs']} epoch(s) after the best, epoch {state['best_epoch']})"


def _lr_scheduler(optimizer: torch.optim.Optimizer, cfg: LoopConfig, steps_per_epoch: int,
                  state: dict[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor. `plateau` (default): 1 until an epoch fails to improve validation
    accuracy, then x `lr_decay` after each such epoch: the step size follows the data, whatever its size,
    where a fixed decay would be tuned to one dataset's epoch count. `constant`: 1 throughout. `linear`:
    from 1 down to 0 at the last step of `epochs` (only sensible when `epochs` is a real budget)."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: state["lr_scale"])
    if cfg.lr_schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"train.lr_schedule {cfg.lr_schedule!r}: use plateau, constant or linear")


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 data: TokenSet, cfg: LoopConfig, device: torch.device, epoch: int) -> tuple[float, float]:
    model.train()
    batches = bucket_batches(data.lengths, cfg.batch_size, seed=cfg.seed * 1000 + epoch, bucketing=cfg.bucketing)
    total_loss, correct, seen = 0.0, 0, 0
    quarter = max(len(batches) // 4, 1)
    adversary = EmbeddingAdversary(model, cfg.adversarial) if cfg.adversarial > 0 else None
    with _progress(f"epoch {epoch}") as progress:
        task = progress.add_task(f"epoch {epoch}", total=len(batches))
        for step, idx in enumerate(batches, start=1):
            ids, lengths, labels = data.batch(idx)
            ids, lengths, labels = ids.to(device), lengths.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            if adversary is None:
                logits = model(ids, lengths)  # (B, C)
                loss = F.cross_entropy(logits, labels)
                loss.backward()
            else:
                logits, loss = adversary.step(ids, lengths, labels)  # (B, C), clean loss; both losses' gradients summed
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(-1) == labels).sum().item()
            seen += len(idx)
            progress.update(task, advance=1, description=f"epoch {epoch} loss {total_loss / seen:.3f}")
            if progress.disable and step % quarter == 0 and step < len(batches):  # no live bar: a line per quarter
                print(f"epoch {epoch}: {step}/{len(batches)} batches, loss {total_loss / seen:.4f}", flush=True)
    if adversary is not None:
        adversary.remove()
    return total_loss / seen, correct / seen


class EmbeddingAdversary:
    """Adversarial training on the token embeddings (Miyato, Dai & Goodfellow, ICLR 2017).

    Each step: the loss on the batch as it is, backward (the parameters' gradients, and g = d loss / d e for
    the batch's embedded tokens e (B, T, E)); then the loss again with each review's embeddings moved by
    r = epsilon x w x g / ||g||, the direction that raises the loss fastest, and backward (its gradients add
    to the first ones). ||g|| is over the review's whole (T, E) block, so the adversary spends its budget on
    the few words that matter most; w is the mean length of a real token's vector in the batch (detached), so
    epsilon is in words: 1.0 lets it move the review's tokens by, in all, as far as one average word vector
    is long, whatever the embedding's scale (Miyato et al. normalise the embedding for the same reason: the
    model cannot shrink the perturbation by growing its vectors). Costs a second forward and backward.
    """

    def __init__(self, model: nn.Module, epsilon: float) -> None:
        self.model, self.epsilon = model, epsilon
        self.embedding = token_embedding(model)
        self.mode: str = "off"  # off | capture | perturb
        self.embedded: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None
        self.handle = self.embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        if self.mode == "capture":
            if not out.requires_grad:  # a frozen embedding: its output still gets a gradient
                out = out.detach().requires_grad_()
            out.retain_grad()
            self.embedded = out  # (B, T, E)
            return out
        if self.mode == "perturb":
            assert self.delta is not None
            return out + self.delta  # (B, T, E)
        return out

    def perturbation(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clean forward and backward (gradients accumulate in the parameters); returns the clean logits
        (B, C), the clean loss and r (B, T, E), zero at padding."""
        self.mode = "capture"
        try:
            logits = self.model(ids, lengths)  # (B, C)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            e = self.embedded
            assert e is not None and e.grad is not None
        finally:
            self.mode, self.embedded = "off", None
        real = (ids != 0)[..., None].to(e.dtype)  # (B, T, 1): padding is never perturbed
        g = e.grad * real  # (B, T, E)
        word = (e.detach().norm(dim=-1, keepdim=True) * real).sum() / real.sum().clamp(min=1)  # () mean vector length
        norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None]  # (B, 1, 1)
        return logits.detach(), loss.detach(), (self.epsilon * word * g / norm).detach()  # (B, C), (), (B, T, E)

    def perturbed(self, delta: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) with the token embeddings moved by delta (B, T, E)."""
        self.mode, self.delta = "perturb", delta
        try:
            return self.model(ids, lengths)  # (B, C)
        finally:
            self.mode, self.delta = "off", None

    def step(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both backward passes of one training step; returns the clean logits (B, C) and loss."""
        logits, loss, delta = self.perturbation(ids, lengths, labels)
        F.cross_entropy(self.perturbed(delta, ids, lengths), labels).backward()
        return logits, loss

    def remove(self) -> None:
        self.handle.remove()


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The model's token embedding: the nn.Embedding named `...embedding` (what _param_groups treats apart)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and name.split(".")[-1] == "embedding":
            return module
    raise ValueError(f"{type(model).__name__} has no token embedding named 'embedding': train.adversarial needs one")


@torch.no_grad()
def predict_proba(model: nn.Module, data: TokenSet, batch_size: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (N, C), in the order of `data`."""
    model.eval()
    out: np.ndarray | None = None
    for idx in sorted_batches(data.lengths, batch_size * 2):
        ids, lengths, _ = data.batch(idx)
        probs = F.softmax(model(ids.to(device), lengths.to(device)).float(), dim=-1).cpu().numpy()  # (B, C)
        if out is None:
            out = np.zeros((len(data), probs.shape[1]), dtype=np.float32)
        out[idx] = probs
    assert out is not None, "no documents to predict"
    return out


def evaluate(model: nn.Module, data: TokenSet, batch_size: int, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy on `data`."""
    probs = predict_proba(model, data, batch_size, device)
    p_true = probs[np.arange(len(data)), data.labels]
    loss = float(-np.log(np.clip(p_true, 1e-12, None)).mean())
    return loss, float((probs.argmax(1) == data.labels).mean())


def _fresh_state(model: nn.Module) -> dict[str, Any]:
    return {"epoch": 0, "history": [], "best_accuracy": -1.0, "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0, "lr_scale": 1.0,
            "best_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def _save_checkpoint(cfg: LoopConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    assert cfg.checkpoint is not None
    with atomic_path(cfg.checkpoint) as tmp:
        torch.save({"fingerprint": cfg.fingerprint, "state": state, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp)


def _load_checkpoint(cfg: LoopConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any],
                     log: Callable[[str], None]) -> dict[str, Any]:
    path = cfg.checkpoint
    assert path is not None
    if not path.exists():
        log(f"resume: no checkpoint at {path}; starting from epoch 1")
        return state
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("fingerprint") != cfg.fingerprint:
        log(f"resume: {path} was written with other params; starting from epoch 1")
        return state
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    log(f"resume: continuing after epoch {ckpt['state']['epoch']} from {path}")
    return ckpt["state"]


def _progress(label: str) -> Progress:
    # A live bar on a terminal; under `dvc repro` (no terminal) the per-epoch log lines say enough.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True, disable=not sys.stderr.isatty())
