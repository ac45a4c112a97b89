"""train@MODEL: fit one neural model on the token table, keep its best epoch, predict the val and test splits.

    python -m flows.train gru            # or gru_attention, cnn, transformer; dvc.yaml runs each of train.models (`foreach`)

Reads data/tokens.parquet (train for fitting, val for early stopping, test only for the final
predictions; `train.label_limit` keeps fewer labelled rows, a point of a learning curve), `train.*`, `model.<name>.*` and `seed`. Writes artifacts/<name>.pt (weights + everything
`predict` needs to rebuild the model and its text pipeline), data/predictions/<name>.parquet (id, split,
label_id, prob_<class id>: the val rows, from which the report chooses its thresholds, then the test rows,
on which it scores) and reports/train/<name>.json (history, epochs, parameters, seconds). Each epoch's losses,
accuracies and learning rate also go to DVCLive as it ends (dvclive/<name>/: metrics.json, plots/metrics/*.tsv),
so `dvc exp show`, `dvc plots show` and DVC's VS Code extension follow a run, queued experiments included.
A checkpoint is written after every epoch to artifacts/checkpoints/<name>.ckpt; `train.resume: true`
continues from it when it was written with the same params.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import hashlib
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import torch
from prefect import flow
from tokenizers import Tokenizer

from flows.common import ARTIFACTS, DATA, params, read_dataset_info, run_stage
from flows.outputs import history_path, limit_labels, prediction_frame, predictions_path, predictions_table
from reweigh.params import ParamsError
from models.registry import MODELS, architecture, build_model, count_parameters
from models.batching import TokenSet, read_token_sets
from models.pretrained import PretrainedMismatch, start_from
from models.train_loop import LoopConfig, predict_proba, setup_torch, train
from reweigh import machine
from reweigh.io import atomic_path, file_sha256, write_json, write_parquet

TOKENS = DATA / "tokens.parquet"
PRETRAINED = ARTIFACTS / "pretrained.pt"
TOKENIZER = ARTIFACTS / "tokenizer.json"
CHECKPOINTS = ARTIFACTS / "checkpoints"
LIVE = Path("dvclive")
LIVE_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def model_path(name: str):
    return ARTIFACTS / f"{name}.pt"


@contextmanager
def live_log(name: str, root: Path = LIVE):
    """DVCLive's logger for one model: yields `on_epoch(row)`, which logs a history row at step = its epoch.
    dvc.yaml declares dvclive/<name>/ (metrics and plots), so DVCLive writes no dvc.yaml of its own, and it
    saves no experiment of its own: `dvc repro` or `dvc exp run` around the stage does that."""
    from dvclive import Live  # imports dvc: only the train stage pays for it, not the modules that import this one

    with Live(dir=str(root / name), save_dvc_exp=False, dvcyaml=False) as live:
        def on_epoch(row: dict[str, float]) -> None:
            live.step = int(row["epoch"])
            for key in LIVE_METRICS:
                live.log_metric(key, row[key])
            live.next_step()
        yield on_epoch


def initialise(model: torch.nn.Module, name: str, init: str, path=PRETRAINED) -> str:
    """Start the model from the pretrain stage's output (init: pretrained, models/pretrained.py); say what was done."""
    if init == "random":
        return "random (seeded)"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the pretrain stage first (dvc repro pretrain), "
                                f"or set model.{name}.init: random")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        with_encoder = start_from(model, saved, name)
    except PretrainedMismatch as exc:
        raise ParamsError(str(exc)) from None
    size = f"{saved['method']}, {saved['embedding'].shape[0]:,} x {saved['embedding'].shape[1]}"
    if with_encoder:
        return f"pretrained embedding + GRU encoder ({size})"
    note = "; the pretrained GRU encoder does not fit this model, left out" if "encoder" in saved else ""
    return f"pretrained embedding ({size}){note}"


def build_initialised(name: str, p, vocab_size: int, n_classes: int, pretrained=PRETRAINED) -> tuple[torch.nn.Module, dict, str]:
    """The model `name` as training starts it: seeded weights, then the pretrained embedding if asked for."""
    section = getattr(p.model, name)
    hyper = architecture(name, section.model_dump())
    torch.manual_seed(p.seed)  # the initial weights come from the seed too
    model = build_model(name, vocab_size, n_classes, **hyper)
    return model, hyper, initialise(model, name, section.init, pretrained)


def token_sets(path: Path, label_limit: int, seed: int) -> tuple[dict[str, pl.DataFrame], dict[str, TokenSet]]:
    """The token table's train, val and test rows (train.label_limit applied): each split's id and label_id, and
    its TokenSet. The token ids go straight from the file into one flat array per split (`read_token_sets`)."""
    rows = limit_labels(pl.read_parquet(path, columns=["id", "split", "label_id"]).with_row_index("row"), label_limit, seed)
    splits = {s: rows.filter(pl.col("split") == s) for s in ("train", "val", "test")}
    data = read_token_sets(path, {s: (df["row"].to_numpy().astype(np.int64), df["label_id"].to_numpy()) for s, df in splits.items()})
    return splits, data


@flow(name="train", flow_run_name="train-{name}", log_prints=True)
def train_flow(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: python -m flows.train {{{'|'.join(MODELS)}}}")
    p = params()
    labels = read_dataset_info()["labels"]
    vocab_size = Tokenizer.from_file(str(TOKENIZER)).get_vocab_size()
    splits, data = token_sets(TOKENS, p.train.label_limit, p.seed)
    model, hyper, init_note = build_initialised(name, p, vocab_size, len(labels))
    model_params = getattr(p.model, name)
    n_params = count_parameters(model)
    fingerprint = hashlib.sha256(json.dumps(
        [name, model_params.model_dump(), p.pretrain.model_dump(), p.train.model_dump(exclude={"models", "resume", "threads", "device"}),
         p.seed, vocab_size, len(data["train"])], sort_keys=True).encode()).hexdigest()
    loop = LoopConfig(**p.train.loop_fields(), embedding_lr_scale=model_params.embedding_lr_scale,
                      adversarial=model_params.adversarial, seed=p.seed,
                      checkpoint=CHECKPOINTS / f"{name}.ckpt", fingerprint=fingerprint)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    (CHECKPOINTS / ".gitignore").write_text("*\n")  # resumable state, never versioned
    print(f"train {name}: {n_params:,} parameters, {len(data['train']):,} train / {len(data['val']):,} val reviews, "
          f"{len(labels)} classes, vocab {vocab_size:,}, embedding {init_note}")

    with live_log(name) as on_epoch:
        result = train(model, data["train"], data["val"], loop, on_epoch=on_epoch)
    model.load_state_dict(result.best_state)
    device = setup_torch(p.train.device, p.train.threads)
    model.to(device)
    val_probs = predict_proba(model, data["val"], p.train.batch_size, device)  # (N_val, C): the report's thresholds
    t0 = time.perf_counter()
    probs = predict_proba(model, data["test"], p.train.batch_size, device)  # (N_test, C)
    test_seconds = time.perf_counter() - t0
    accuracy = float((probs.argmax(1) == data["test"].labels).mean())

    with atomic_path(model_path(name)) as tmp:
        torch.save({
            "model": name,
            "config": {"vocab_size": vocab_size, "n_classes": len(labels), **hyper},
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "labels": labels,
            "clean_steps": list(p.clean.steps),
            "tokenize": {"kind": p.tokenize.kind, "max_length": p.tokenize.max_length,
                         "truncation": p.tokenize.truncation, "head_share": p.tokenize.head_share},
        }, tmp)
    write_parquet(predictions_table([prediction_frame("val", splits["val"]["id"], data["val"].labels, val_probs),
                                     prediction_frame("test", splits["test"]["id"], data["test"].labels, probs)]),
                  predictions_path(name))
    write_json({
        "model": name,
        "parameters": n_params,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "init": init_note,
        "resumed_from_epoch": result.resumed_from,
        "train_seconds": round(result.seconds, 1),
        "test_predict_seconds": round(test_seconds, 1),
        "predictions_sha256": file_sha256(predictions_path(name)),  # the ensemble's dependency (dvc.yaml)
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": machine.describe(),
        "history": result.history,
    }, history_path(name))
    print(f"train {name}: best epoch {result.best_epoch} of {result.epochs_run}, test accuracy {accuracy:.4f}, "
          f"{result.seconds:.0f} s training → {model_path(name)}, {predictions_path(name)}")
    return str(model_path(name))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in MODELS:
        print(f"usage: python -m flows.train {{{'|'.join(MODELS)}}}", file=sys.stderr)
        sys.exit(2)
    run_stage(lambda: train_flow(args[0]), f"train {args[0]}")


if __name__ == "__main__":
    main()
