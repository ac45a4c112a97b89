"""ablations: what word order, positional encoding, the 1/sqrt(d) scale and the key padding mask do (issue 13).

    python -m bench --sections ablations [--ablation-epochs N]    # inside the benchmark, on its reviews
    python -m bench.ablations export PROJECT DIR [--corpus]       # a project's token table + embedding as arrays
    python -m bench.ablations run DIR --out results.json [--device cuda] [--epochs N] [--only a,b]
                                      [--pretrain saved|ppmi] [--lm-epochs N]

Each variant is one model of models/ trained by the project's own loop (models/train_loop.py) on the same
token table, from the same pretrained embedding, with params.yaml's train.* and model.<name>.* except for
the one switch the variant names. `run` needs torch + numpy alone (no Prefect, DVC or polars), so the same
command runs on a GPU machine over a copied DIR. Per variant: test accuracy at the best validation epoch,
seconds per epoch, why training stopped, the per-epoch curve, and the share of test predictions that change
when the reviews are batched in a random order (each padded to its batch's longest, most of them heavily)
instead of by length: 0 for every model with the padding mask, which is the point of the mask.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.registry import architecture, build_model, count_parameters
from models.batching import TokenSet
from models.pretrained import start_from
from models.train_loop import LoopConfig, predict_proba, setup_torch, train

SPLITS = ("train", "val", "test")
LOOP_KEYS = ("batch_size", "epochs", "lr", "lr_schedule", "lr_decay", "weight_decay", "patience", "grad_clip",
             "bucketing", "device", "threads")


@dataclass(frozen=True)
class Variant:
    model: str
    change: dict[str, Any] = field(default_factory=dict)  # model.<model>.* keys set for this variant
    shuffle: bool = False  # tokens shuffled within each review, in every split
    reference: str = ""  # the variant this one is compared with ("" = it is a reference)
    asks: str = ""


VARIANTS: dict[str, Variant] = {
    "transformer": Variant("transformer", asks="sinusoidal positions, scaled scores, padding masked (the defaults)"),
    "transformer_learned": Variant("transformer", {"positional_encoding": "learned"}, reference="transformer",
                                   asks="positions learned (one trained vector per position) instead of sinusoidal"),
    "transformer_no_positions": Variant("transformer", {"positional_encoding": "none"}, reference="transformer",
                                        asks="no positions: self-attention sees a bag of words"),
    "transformer_shuffled": Variant("transformer", shuffle=True, reference="transformer",
                                    asks="sinusoidal positions, but every review's tokens shuffled (train, val, test)"),
    "transformer_unscaled": Variant("transformer", {"scale": False}, reference="transformer",
                                    asks="scores q.k not divided by sqrt(head width)"),
    "transformer_unmasked": Variant("transformer", {"mask_padding": False}, reference="transformer",
                                    asks="no key padding mask: <pad> positions can be attended to"),
    "gru_attention": Variant("gru_attention", {"positional_encoding": False},
                             asks="the GRU reads the order; no positions added (the default)"),
    "gru_attention_positions": Variant("gru_attention", {"positional_encoding": True}, reference="gru_attention",
                                       asks="sinusoidal positions added to the GRU's outputs before attention"),
    "gru": Variant("gru", asks="the plain GRU (not an ablation: for a device run of the default models)"),
}
ABLATIONS = tuple(n for n in VARIANTS if n != "gru")  # what `python -m bench --sections ablations` trains


# ---- a project's data as plain arrays (runs where the project runs: polars, tokenizers) ----

def export(project: Path, dest: Path, corpus: bool = False) -> dict[str, Any]:
    """tokens.npz (per split: ids, lengths, labels), pretrained.pt, meta.json (labels, vocabulary size,
    params.yaml) and, with `corpus`, corpus.npz: the pretrain stage's documents (train + unsup, whole)."""
    import polars as pl
    import yaml
    from tokenizers import Tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(project / "artifacts" / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    dtype = np.uint16 if vocab <= 65536 else np.int32  # halves what travels
    tokens = pl.read_parquet(project / "data" / "tokens.parquet", columns=["ids", "label_id", "split"])
    arrays = {}
    for split in SPLITS:
        ts = TokenSet.from_frame(tokens.filter(pl.col("split") == split))
        arrays |= {f"{split}_ids": ts.ids.astype(dtype), f"{split}_lengths": ts.lengths.astype(np.int32),
                   f"{split}_labels": ts.labels.astype(np.int32)}
    np.savez_compressed(dest / "tokens.npz", **arrays)
    shutil.copy2(project / "artifacts" / "pretrained.pt", dest / "pretrained.pt")
    params = yaml.safe_load((project / "params.yaml").read_text())
    meta = {"labels": json.loads((project / "data" / "dataset.json").read_text())["labels"], "vocab_size": vocab,
            "params": params, "rows": {s: int(len(arrays[f"{s}_lengths"])) for s in SPLITS}}
    if corpus:
        from flows.pretrain import PRETRAIN_SPLITS, corpus_ids

        df = pl.read_parquet(project / "data" / "clean.parquet", columns=["text", "split"])
        ids, starts = corpus_ids(tok, df.filter(pl.col("split").is_in(PRETRAIN_SPLITS))["text"].to_list(),
                                 params["tokenize"]["kind"], params["pretrain"]["max_length"])
        np.savez_compressed(dest / "corpus.npz", ids=ids.astype(dtype), starts=starts)
        meta["corpus_tokens"] = int(len(ids))
    (dest / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load(src: Path) -> tuple[dict[str, Any], dict[str, TokenSet]]:
    meta = json.loads((src / "meta.json").read_text())
    z = np.load(src / "tokens.npz")
    sets = {}
    for s in SPLITS:
        lengths = z[f"{s}_lengths"].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        sets[s] = TokenSet(z[f"{s}_ids"].astype(np.int64), offsets, lengths, z[f"{s}_labels"].astype(np.int64))
    return meta, sets


def shuffled(data: TokenSet, seed: int) -> TokenSet:
    """The same reviews with each one's tokens in a seeded random order (ids must be stored review after review)."""
    review = np.repeat(np.arange(len(data)), data.lengths)  # (N_tokens,) which review each token is in
    order = np.lexsort((np.random.default_rng(seed).random(len(data.ids)), review))  # shuffle within a review only
    return TokenSet(data.ids[order], data.offsets, data.lengths, data.labels)


# ---- training one variant (torch + numpy only) ----

def pretrain(src: Path, meta: dict[str, Any], lm_epochs: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pretrain stage's computation on this machine: PPMI-SVD vectors, then `lm_epochs` of the encoder's
    language model (models/language_model.py) on `device`. Returns what pretrained.pt would hold, and figures."""
    from models.embeddings import ppmi_svd_embeddings
    from models.language_model import pretrain_encoder

    p, cfg = meta["params"], meta["params"]["pretrain"]
    z = np.load(src / "corpus.npz")
    ids, starts = z["ids"].astype(np.int64), z["starts"].astype(np.int64)
    t0 = time.perf_counter()
    vectors, counts = ppmi_svd_embeddings(ids, starts, meta["vocab_size"], cfg["dim"], cfg["window"], p["seed"], cfg["smoothing"])
    figures: dict[str, Any] = {"tokens": int(len(ids)), "ppmi_svd_s": round(time.perf_counter() - t0, 1), "lm_epochs": lm_epochs}
    saved: dict[str, Any] = {"method": "ppmi_svd", "embedding": torch.from_numpy(vectors)}
    if lm_epochs:
        t1 = time.perf_counter()
        saved |= pretrain_encoder(torch.from_numpy(vectors), torch.from_numpy(counts), ids, starts,
                                  **_lm_cut(p["tokenize"], cfg.get("lm_max_length", 0)), hidden_size=cfg["hidden_size"],
                                  negatives=cfg["negatives"], epochs=lm_epochs, lr=cfg["lr"],
                                  batch_size=cfg["batch_size"], seed=p["seed"],
                                  device=device)
        saved["method"] = "ppmi_svd+bilm"
        figures |= {"lm_s": round(time.perf_counter() - t1, 1), "lm_history": saved["history"]}
    return saved, figures


def _lm_cut(tokenize: dict[str, Any], lm_max_length: int) -> dict[str, int]:
    """flows/pretrain.language_model_cut on params.yaml's plain dicts."""
    n = min(lm_max_length or tokenize["max_length"], tokenize["max_length"])
    return {"max_length": n, "head": _head_tokens({**tokenize, "max_length": n})}


def _head_tokens(tokenize: dict[str, Any]) -> int:
    """flows/tokenize.head_tokens on params.yaml's plain dict (that module needs polars and Prefect)."""
    kind, n = tokenize.get("truncation", "head"), tokenize["max_length"]
    return {"head": n, "tail": 0}.get(kind, round(tokenize.get("head_share", 0.5) * n))


@torch.no_grad()
def padding_check(model: torch.nn.Module, data: TokenSet, sorted_probs: np.ndarray, batch_size: int,
                  device: torch.device, seed: int) -> dict[str, float]:
    """Predict again with the reviews in a random order, each batch padded to its longest review."""
    model.eval()
    order = np.random.default_rng(seed).permutation(len(data))
    probs = np.zeros_like(sorted_probs)
    padded = real = 0
    for lo in range(0, len(order), batch_size * 2):
        idx = order[lo:lo + batch_size * 2]
        ids, lengths, _ = data.batch(idx)  # (B, T), (B,)
        padded, real = padded + ids.numel(), real + int(lengths.sum())
        probs[idx] = torch.softmax(model(ids.to(device), lengths.to(device)).float(), -1).cpu().numpy()  # (B, C)
    return {"padding_share": round(1 - real / padded, 3),
            "accuracy_padded": float((probs.argmax(1) == data.labels).mean()),
            "predictions_changed": float((probs.argmax(1) != sorted_probs.argmax(1)).mean()),
            "max_probability_change": float(np.abs(probs - sorted_probs).max())}


def train_variant(name: str, meta: dict[str, Any], sets: dict[str, TokenSet], saved: dict[str, Any],
                  device: str, epochs: int | None, threads: int | None) -> dict[str, Any]:
    v, p = VARIANTS[name], meta["params"]
    seed = p["seed"]
    data = {s: shuffled(d, seed + i) for i, (s, d) in enumerate(sets.items())} if v.shuffle else sets
    section = {**p["model"][v.model], **v.change}
    hyper = architecture(v.model, section)
    torch.manual_seed(seed)
    model = build_model(v.model, meta["vocab_size"], len(meta["labels"]), **hyper)
    init = "random"
    if section.get("init", "pretrained") == "pretrained":  # as flows/train.initialise starts it
        with_encoder = start_from(model, saved, v.model)
        init = saved["method"] + ("" if with_encoder or "encoder" not in saved else ", embedding only")
    loop = {k: p["train"][k] for k in LOOP_KEYS} | {"device": device}
    loop |= {"epochs": epochs} if epochs else {}
    loop |= {"threads": threads} if threads is not None else {}
    result = train(model, data["train"], data["val"], LoopConfig(**loop, seed=seed,
                   embedding_lr_scale=section.get("embedding_lr_scale", 1.0), adversarial=section.get("adversarial", 0.0)), log=lambda m: print(f"{name}: {m}", flush=True))
    model.load_state_dict(result.best_state)
    dev = setup_torch(device, loop["threads"])
    model.to(dev)
    probs = predict_proba(model, data["test"], loop["batch_size"], dev)  # (N_test, C)
    return {"model": v.model, "change": v.change, "shuffle": v.shuffle, "reference": v.reference, "asks": v.asks,
            "init": init, "parameters": count_parameters(model), "device": str(dev),
            "test_accuracy": float((probs.argmax(1) == data["test"].labels).mean()),
            "best_epoch": result.best_epoch, "epochs": result.epochs_run, "stop_reason": result.stop_reason,
            "s_per_epoch": round(float(np.mean([h["seconds"] for h in result.history])), 1),
            "train_seconds": round(result.seconds, 1), "history": result.history,
            **padding_check(model, data["test"], probs, loop["batch_size"], dev, seed)}


def run(src: Path, out: Path, only: list[str], device: str = "auto", epochs: int | None = None,
        threads: int | None = None, pretrain_from: str = "saved", lm_epochs: int = 0,
        overrides: list[str] = ()) -> dict[str, Any]:
    """Train each variant in turn; `out` is rewritten (whole) after each, so a cut-off run keeps what it has.
    `overrides`: params.yaml keys set for every variant, `train.lr=0.001` (the value read as YAML)."""
    from reweigh.params import ParamsError, apply_overrides, parse_assignments

    unknown = [n for n in only if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    meta, sets = load(src)
    try:
        meta["params"] = apply_overrides(meta["params"], parse_assignments(overrides), known=True)
    except ParamsError as exc:
        raise SystemExit(str(exc)) from None
    dev = setup_torch(device, meta["params"]["train"]["threads"] if threads is None else threads)
    result: dict[str, Any] = {"meta": {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                                       f"{os.cpu_count()} CPU cores", "torch": torch.__version__, "rows": meta["rows"],
                                       "epochs_cap": epochs or meta["params"]["train"]["epochs"], "overrides": list(overrides)},
                              "variants": {}}
    if pretrain_from == "ppmi":
        saved, result["pretrain"] = pretrain(src, meta, lm_epochs, dev)
    else:
        saved = torch.load(src / "pretrained.pt", map_location="cpu", weights_only=True)
    for name in only:
        t0 = time.perf_counter()
        result["variants"][name] = train_variant(name, meta, sets, saved, device, epochs, threads)
        r = result["variants"][name]
        print(f"{name}: test accuracy {r['test_accuracy']:.4f}, {r['s_per_epoch']} s/epoch, best epoch {r['best_epoch']} "
              f"of {r['epochs']}, {r['predictions_changed']:.2%} of predictions changed by padding "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, out)
    return result


# ---- inside `python -m bench` ----

def section(work: Path, archive: str | None, params_update: dict, epochs: int | None, out_dir: Path,
            reuse: Path | None = None) -> dict[str, Any]:
    """A throwaway project, `dvc repro pretrain` in it, then every ablation in one child process. `reuse`: a
    project already reproduced with the same params (the pipeline section's, in --quick), exported as it is."""
    import subprocess

    from bench.pipeline import _dvc, make_project, project_env

    tmp = work / "ablations"
    tmp.mkdir(parents=True, exist_ok=True)
    ready = reuse is not None and all((reuse / f).is_file() for f in ("data/tokens.parquet", "artifacts/pretrained.pt"))
    project = reuse if ready else make_project(tmp / "project", params_update)
    if not ready:
        r = _dvc(project, project_env(tmp, project, archive), "repro", "pretrain", timeout=3 * 3600)
        if r.returncode:
            raise RuntimeError(f"dvc repro pretrain failed:\n{(r.stdout + r.stderr)[-3000:]}")
    export(project, tmp / "data")
    out = tmp / "ablations.json"
    cmd = [sys.executable, "-m", "bench.ablations", "run", str(tmp / "data"), "--out", str(out), "--device", "cpu"]
    cmd += ["--epochs", str(epochs)] if epochs else []
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    result = json.loads(out.read_text())
    result["figure"] = str(curves_figure(result, out_dir / "ablation-curves.png"))
    return result


def curves_figure(result: dict[str, Any], path: Path) -> Path:
    """Validation accuracy and training loss per epoch, every variant: scaled against unscaled side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in result["variants"].items():
        epochs = [h["epoch"] for h in r["history"]]
        style = "--" if r["model"] == "gru_attention" else "-"
        axes[0].plot(epochs, [100 * h["val_accuracy"] for h in r["history"]], style, marker="o", label=name)
        axes[1].plot(epochs, [h["train_loss"] for h in r["history"]], style, marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="validation accuracy %", title="validation accuracy per epoch")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="training loss per epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(a: dict[str, Any]) -> list[str]:
    """bench.md's table: each variant against its reference."""
    if not a.get("variants"):
        return []
    m, vs = a["meta"], a["variants"]
    L = [f"Device {m['device']} ({m['device_name']}), torch {m['torch']}; reviews {m['rows']}; at most "
         f"{m['epochs_cap']} epochs, patience as params.yaml says.", "",
         "| variant | what changes | test accuracy % | vs its reference, pts | s / epoch | best epoch / epochs "
         "| padding in random batches | test predictions changed by that padding |",
         "|---|---|--:|--:|--:|--:|--:|--:|"]
    for name, r in vs.items():
        ref = vs.get(r["reference"])
        delta = f"{100 * (r['test_accuracy'] - ref['test_accuracy']):+.2f}" if ref else "reference"
        L.append(f"| {name} | {r['asks']} | {100 * r['test_accuracy']:.2f} | {delta} | {r['s_per_epoch']} | "
                 f"{r['best_epoch']} / {r['epochs']} | {100 * r['padding_share']:.0f}% | {100 * r['predictions_changed']:.2f}% |")
    if "figure" in a:
        L += ["", f"Training curves: {a['figure']}"]
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ablations", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="a project's token table + pretrained embedding as plain arrays")
    ex.add_argument("project", type=Path)
    ex.add_argument("dest", type=Path)
    ex.add_argument("--corpus", action="store_true", help="also the pretrain stage's documents (for run --pretrain ppmi)")
    rn = sub.add_parser("run", help="train variants on an exported DIR")
    rn.add_argument("src", type=Path)
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument("--only", default=",".join(ABLATIONS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    rn.add_argument("--device", default="auto", help="auto | cpu | cuda")
    rn.add_argument("--epochs", type=int, help="cap on epochs (default: params.yaml's train.epochs; patience still stops)")
    rn.add_argument("--threads", type=int, help="torch CPU threads (default: params.yaml's train.threads)")
    rn.add_argument("--pretrain", default="saved", choices=("saved", "ppmi"),
                    help="saved: DIR/pretrained.pt; ppmi: compute it here from DIR/corpus.npz (export --corpus)")
    rn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml key for every variant, e.g. model.gru.dropout=0.5 (repeatable)")
    rn.add_argument("--lm-epochs", type=int, default=0, help="with --pretrain ppmi: language-model epochs of the GRU encoder")
    args = ap.parse_args(argv)
    if args.cmd == "export":
        print(json.dumps({k: v for k, v in export(args.project, args.dest, args.corpus).items() if k != "params"}))
        return 0
    run(args.src, args.out, [n for n in args.only.split(",") if n], args.device, args.epochs, args.threads,
        args.pretrain, args.lm_epochs, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
