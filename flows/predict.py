"""predict: classify new text with a trained model; for the attention models, show the tokens they weighed most.

    python -m flows.predict "a wonderful, moving film" "two hours I will never get back"
    python -m flows.predict --model gru --file reviews.txt          # one review per line
    python -m flows.predict --model nbsvm --json "..."              # a baseline: nbsvm, tfidf_lr
    python -m flows.predict --model ensemble "..."                  # each member's prediction, averaged
    python -m flows.predict --file in.csv --text-column review --out scored.parquet   # a table, in bulk (flows/bulk.py)

Text goes through the same cleaning steps and tokenizer the model was trained with (both recorded in
artifacts/<model>.pt, or artifacts/<baseline>.pkl), so a prediction here matches what the pipeline computed
for the same review. The ensemble (artifacts/ensemble.json: members, weights) runs each member's prediction
here and averages their probabilities with its weights, as the ensemble stage did.

Every caller (this command, bulk scoring, the retrain judge, the HTTP service in flows/service.py) goes through
a Predictor: one model of the set loaded once, with the files it came from, scoring raw text.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import argparse
import contextlib
import functools
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from flows.clean import clean_texts
from flows.common import ARTIFACTS
from flows.tokenize import encode
from models.registry import MODELS, build_model
from models.batching import TokenSet, sorted_batches
from models.gru import padding_mask
from models.train_loop import predict_proba as score_ids
from reweigh.params import BASELINE_NAMES, ENSEMBLE

TOKENIZER = ARTIFACTS / "tokenizer.json"
# Any model a run can train (params.yaml train.models and baseline.models pick which are), and the ensemble.
MODEL_CHOICES = ("gru_attention", *(m for m in MODELS if m != "gru_attention"), *BASELINE_NAMES, ENSEMBLE)
ATTENTION_MODELS = ("gru_attention", "transformer")  # the models with weights over the tokens to show
BATCH = 128  # texts a forward pass scores at once, sorted by length
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")  # --file formats scored in bulk (flows/bulk.py)


def forward_with_weights(net: torch.nn.Module, name: str, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, C) and, for the attention models, one weight per token (N, T) summing to 1 over a review's real
    tokens: GRU + attention and an attention-pooled Transformer, their pooling weights; a mean-pooled Transformer
    (whose pooling weights are all 1/L), the attention each token received in the last block, averaged over its
    heads and over the real tokens that attend. None for the other models."""
    if name not in ATTENTION_MODELS:
        return net(ids, lengths), None
    logits, att = net(ids, lengths, return_attention=True)  # (N, C), {"self": (N, nh, T, T), "pool": (N, T)}
    if name == "gru_attention" or net.cfg.pooling == "attention":
        return logits, att["pool"]
    received = att["self"].mean(1)  # (N, T, T): query x key, mean over heads
    real = (~padding_mask(lengths, ids.size(1))).to(received.dtype)  # (N, T)
    return logits, (received * real[:, :, None]).sum(1) / real.sum(1, keepdim=True)  # (N, T)


def weights_meaning(name: str, net: torch.nn.Module) -> str:
    """What forward_with_weights' per-token weights are, for captions."""
    if name == "gru_attention" or getattr(net.cfg, "pooling", "") == "attention":
        return "attention-pooling weight"
    return "attention received in the last block (mean over heads and queries)"


class ModelFileError(ValueError):
    """A model file that exists but cannot be read: cut short, corrupt, or not one reweigh wrote."""


def load_model(name: str, artifacts: Path = ARTIFACTS) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model from artifacts/<name>.pt, in eval mode, and its checkpoint's metadata."""
    path = artifacts / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it first (dvc repro train@{name})")
    with _unreadable(path, f"train@{name}"):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        model = build_model(ckpt["model"], **ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


@contextlib.contextmanager
def _unreadable(path: Path, stage: str):
    """Any failure to read `path` as a ModelFileError that names it and the way back."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch, pickle, JSON and tokenizers each fail their own way on a damaged file
        raise ModelFileError(f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:300]}): it was cut short, damaged or "
                             f"not written by reweigh; restore it with `dvc checkout {path}` or rebuild it with "
                             f"`dvc repro {stage}`") from exc


def token_strings(tok: Tokenizer, ids: list[int]) -> list[str]:
    """Readable tokens: BPE's word-start marker dropped."""
    return [(tok.id_to_token(i) or "?").replace("▁", "") or "▁" for i in ids]


class Predictor:
    """One model of the set in memory, ready to score raw text: a neural model with its tokenizer, a baseline's
    pipeline, or the ensemble with its members. `files` are what it was loaded from; `stamp` their state then."""

    name: str
    labels: list[str]
    files: tuple[Path, ...]
    stamp: tuple

    def proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (N, C), float64, in the order of `labels`."""
        raise NotImplementedError

    def predict(self, texts: list[str], top_k: int = 8, explain: bool = True) -> list[dict]:
        """Per text: label and class probabilities (and, for the attention models when `explain`, top_tokens)."""
        return [_row(t, p, self.labels) for t, p in zip(texts, self.proba(texts))]


class NeuralPredictor(Predictor):
    def __init__(self, name: str, artifacts: Path) -> None:
        self.name, self.files = name, (artifacts / f"{name}.pt", artifacts / TOKENIZER.name)
        self.stamp = stamp(*self.files)
        self.net, self.ckpt = load_model(name, artifacts)
        with _unreadable(self.files[1], "tokenize"):
            self.tok = Tokenizer.from_file(str(self.files[1]))
        self.labels = list(self.ckpt["labels"])

    def encode(self, texts: list[str]) -> TokenSet:
        """The texts cleaned, tokenized and cut as the model was trained (its checkpoint records how)."""
        cleaned = clean_texts(texts, self.ckpt["clean_steps"])
        cut = self.ckpt["tokenize"]  # a checkpoint from before `truncation` kept the head
        return TokenSet.from_lists(encode(self.tok, cleaned, cut["kind"], cut["max_length"], truncation=cut.get("truncation", "head"),
                                          head_share=cut.get("head_share", 0.5)))

    def proba(self, texts: list[str]) -> np.ndarray:
        """Batches of similar length, no attention weights asked for (so the fused attention kernel runs)."""
        with torch.inference_mode():
            return score_ids(self.net, self.encode(texts), BATCH // 2).astype(np.float64)

    def predict(self, texts: list[str], top_k: int = 8, explain: bool = True) -> list[dict]:
        if not explain or self.name not in ATTENTION_MODELS:
            return super().predict(texts, top_k, explain)
        data = self.encode(texts)
        out: list[dict | None] = [None] * len(texts)
        for idx in sorted_batches(data.lengths, BATCH):  # similar lengths together: little padding
            ids, lengths, _ = data.batch(idx)
            with torch.inference_mode():
                logits, weights = forward_with_weights(self.net, self.name, ids, lengths)  # (B, C), (B, T)
                probs = torch.softmax(logits.float(), dim=-1)  # (B, C)
            for row, i in enumerate(idx):
                n = int(lengths[row])
                w = weights[row, :n]
                tokens = token_strings(self.tok, ids[row, :n].tolist())
                top = torch.argsort(w, descending=True)[:top_k].tolist()
                out[i] = _row(texts[i], probs[row], self.labels) | {
                    "top_tokens": [{"token": tokens[j], "position": j, "weight": round(float(w[j]), 4)} for j in top]}
        return out  # type: ignore[return-value]


class BaselinePredictor(Predictor):
    def __init__(self, name: str, artifacts: Path) -> None:
        path = artifacts / f"{name}.pkl"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: fit it first (dvc repro baseline@{name})")
        self.name, self.files, self.stamp = name, (path,), stamp(path)
        with _unreadable(path, f"baseline@{name}"):
            saved = pickle.loads(path.read_bytes())
            self.pipeline, self.clean_steps, self.labels = saved["pipeline"], saved["clean_steps"], list(saved["labels"])

    def proba(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(clean_texts(texts, self.clean_steps)), dtype=np.float64)


class EnsemblePredictor(Predictor):
    """Each member's prediction, averaged with the weights the ensemble stage recorded (artifacts/ensemble.json)."""

    def __init__(self, artifacts: Path) -> None:
        self.name, self.spec = ENSEMBLE, ensemble_spec(artifacts)
        self.members = {m: load_predictor(m, artifacts) for m in self.spec["members"]}
        self.labels = list(self.spec["labels"])
        self.files = (artifacts / f"{ENSEMBLE}.json", *(f for p in self.members.values() for f in p.files))
        self.stamp = (stamp(self.files[0]), *(p.stamp for p in self.members.values()))

    def proba(self, texts: list[str]) -> np.ndarray:
        return mix(self.spec, {m: (p.proba(texts), p.labels) for m, p in self.members.items()})


def load_predictor(name: str, artifacts: Path = ARTIFACTS) -> Predictor:
    """`name` (a neural model, a baseline or the ensemble) loaded from `artifacts` now. FileNotFoundError names a
    missing file, ModelFileError one that cannot be read."""
    if name == ENSEMBLE:
        return EnsemblePredictor(artifacts)
    if name in BASELINE_NAMES:
        return BaselinePredictor(name, artifacts)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODEL_CHOICES)}")
    return NeuralPredictor(name, artifacts)


def model_files(name: str, artifacts: Path = ARTIFACTS) -> tuple[Path, ...]:
    """The files `name` is loaded from, as they are now (the ensemble's members are read from its spec)."""
    if name == ENSEMBLE:
        spec_file = artifacts / f"{ENSEMBLE}.json"
        try:
            members = json.loads(spec_file.read_text()).get("members", [])
        except (OSError, ValueError):
            members = []  # missing or being replaced: load_predictor says which
        return (spec_file, *(f for m in members for f in model_files(m, artifacts)))
    if name in BASELINE_NAMES:
        return (artifacts / f"{name}.pkl",)
    return artifacts / f"{name}.pt", artifacts / TOKENIZER.name


def stamp(*paths: Path) -> tuple:
    """What identifies these files' current contents cheaply: a new file written in its place differs."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((str(p), None))
    return tuple(out)


@functools.lru_cache(maxsize=16)
def _cached(name: str, artifacts: str, state: tuple) -> Predictor:
    return load_predictor(name, Path(artifacts))


def predictor(name: str, artifacts: Path = ARTIFACTS) -> Predictor:
    """`name` loaded once per process, and again when one of its files changes."""
    return _cached(name, str(artifacts), stamp(*model_files(name, artifacts)))


def predict(texts: list[str], model: str = "gru_attention", top_k: int = 8, artifacts: Path = ARTIFACTS,
            explain: bool = True) -> list[dict]:
    """Label and class probabilities for each text; `top_tokens` (token, weight) for the attention models when
    `explain` (the weights take the slower, explicit attention path)."""
    return predictor(model, artifacts).predict(texts, top_k, explain)


def predict_proba(texts: list[str], model: str, artifacts: Path = ARTIFACTS) -> tuple[np.ndarray, list[str]]:
    """Class probabilities (N, C) of any model of the set (neural, baseline or the ensemble) and its labels."""
    p = predictor(model, artifacts)
    return p.proba(texts), p.labels


def _row(text: str, probs, labels: list[str]) -> dict:
    return {"text": text, "label": labels[int(probs.argmax())],
            "probabilities": {label: round(float(probs[c]), 4) for c, label in enumerate(labels)}}


def ensemble_spec(artifacts: Path = ARTIFACTS) -> dict:
    """artifacts/ensemble.json (members, weights, labels), checked to describe an ensemble that exists."""
    path = artifacts / f"{ENSEMBLE}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the ensemble first (dvc repro ensemble)")
    with _unreadable(path, "ensemble"):
        spec = json.loads(path.read_text())
    if not spec.get("enabled"):
        raise FileNotFoundError(f"{path}: this run has no ensemble ({spec.get('reason', 'disabled')}); see params ensemble.*")
    return spec


def mix(spec: dict, member_probs: dict[str, tuple[np.ndarray, list[str]]]) -> np.ndarray:
    """The ensemble's probabilities (N, C): its members' (N, C) each, weighted as the ensemble stage recorded."""
    mixed = None
    for member, weight in zip(spec["members"], spec["weights"]):
        probs, labels = member_probs[member]
        if labels != spec["labels"]:
            raise ValueError(f"{member}'s labels {labels} differ from the ensemble's {spec['labels']}: rerun `dvc repro`")
        mixed = weight * probs if mixed is None else mixed + weight * probs
    return mixed


def format_prediction(row: dict) -> str:
    text = row["text"] if len(row["text"]) <= 70 else row["text"][:67] + "..."
    probs = "  ".join(f"{k} {v:.3f}" for k, v in row["probabilities"].items())
    lines = [f"{row['label']:>8}  [{probs}]  {text}"]
    if "top_tokens" in row:
        lines.append("          weighed most: " + ", ".join(f"{t['token']} ({t['weight']:.2f})" for t in row["top_tokens"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.predict", description="Classify text with a trained reweigh model.")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", type=Path, help="a text file (one text per line), or a table to score in bulk: "
                                                  ".csv, .tsv, .parquet, .jsonl (with --text-column and --out)")
    parser.add_argument("--text-column", default="text", help="the table's column holding the text (default: text)")
    parser.add_argument("--out", type=Path, help="bulk scoring: write the table with predictions here (.parquet, .csv, .tsv, .jsonl)")
    parser.add_argument("--batch-rows", type=int, help="bulk scoring: rows read, scored and written at a time (default 16384)")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="gru_attention")
    parser.add_argument("--top", type=int, default=8, help="tokens to show for the attention models")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    if args.out or (args.file and args.file.suffix.lower() in TABLE_SUFFIXES):
        if not (args.file and args.out) or args.texts:
            parser.error("bulk scoring reads one table and writes one: --file IN --out OUT (no texts on the command line)")
        from flows.bulk import BATCH_ROWS, BulkError, score_file

        try:
            score_file(args.file, args.out, args.model, args.text_column, args.batch_rows or BATCH_ROWS)
        except (BulkError, FileNotFoundError, ModelFileError) as exc:
            print(f"reweigh predict: {exc}", file=sys.stderr)
            sys.exit(1)
        return
    texts = list(args.texts)
    if args.file:
        texts += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
    if not texts:
        parser.error("give texts on the command line or --file")
    try:
        rows = predict(texts, args.model, args.top)
    except (FileNotFoundError, ModelFileError) as exc:
        print(f"reweigh predict: {exc}", file=sys.stderr)
        sys.exit(1)
    for row in rows:
        print(json.dumps(row) if args.json else format_prediction(row))


if __name__ == "__main__":
    main()
