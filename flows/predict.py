"""predict: classify new text with a trained model; for the attention models, show the tokens they weighed most.

    python -m flows.predict "a wonderful, moving film" "two hours I will never get back"
    python -m flows.predict --model gru --file reviews.txt          # one review per line
    python -m flows.predict --model nbsvm --json "..."              # a baseline: nbsvm, tfidf_lr
    python -m flows.predict --model ensemble "..."                  # each member's prediction, averaged

Text goes through the same cleaning steps and tokenizer the model was trained with (both recorded in
artifacts/<model>.pt, or artifacts/<baseline>.pkl), so a prediction here matches what the pipeline computed
for the same review. The ensemble (artifacts/ensemble.json: members, weights) runs each member's prediction
here and averages their probabilities with its weights, as the ensemble stage did.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import argparse
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
from models import MODELS, build_model
from models.batching import TokenSet, sorted_batches
from models.gru import padding_mask
from models.train_loop import predict_proba as score_ids
from reweigh.params import BASELINE_NAMES, ENSEMBLE

TOKENIZER = ARTIFACTS / "tokenizer.json"
# Any model a run can train (params.yaml train.models and baseline.models pick which are), and the ensemble.
MODEL_CHOICES = ("gru_attention", *(m for m in MODELS if m != "gru_attention"), *BASELINE_NAMES, ENSEMBLE)
ATTENTION_MODELS = ("gru_attention", "transformer")  # the models with weights over the tokens to show
BATCH = 128  # texts a forward pass scores at once, sorted by length


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


def load_model(name: str, artifacts: Path = ARTIFACTS) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model from artifacts/<name>.pt, in eval mode, and its checkpoint's metadata."""
    path = artifacts / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it first (dvc repro train@{name})")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["model"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def _stamp(*paths: Path) -> tuple:
    """What identifies these files' current contents cheaply: a new model written in place reloads."""
    stats = [p.stat() for p in paths]
    return tuple((str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns) for p, st in zip(paths, stats))


@functools.lru_cache(maxsize=16)
def _loaded(name: str, artifacts: str, stamp: tuple) -> tuple[torch.nn.Module, dict[str, Any], Tokenizer]:
    net, ckpt = load_model(name, Path(artifacts))
    return net, ckpt, Tokenizer.from_file(str(Path(artifacts) / TOKENIZER.name))


def loaded(name: str, artifacts: Path = ARTIFACTS) -> tuple[torch.nn.Module, dict[str, Any], Tokenizer]:
    """The model, its checkpoint and the tokenizer, loaded once per process (again when a file changes)."""
    path = artifacts / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it first (dvc repro train@{name})")
    return _loaded(name, str(artifacts), _stamp(path, artifacts / TOKENIZER.name))


def token_strings(tok: Tokenizer, ids: list[int]) -> list[str]:
    """Readable tokens: BPE's word-start marker dropped."""
    return [(tok.id_to_token(i) or "?").replace("▁", "") or "▁" for i in ids]


def predict(texts: list[str], model: str = "gru_attention", top_k: int = 8, artifacts: Path = ARTIFACTS) -> list[dict]:
    """Label and class probabilities for each text; `top_tokens` (token, weight) for the attention models."""
    if model not in ATTENTION_MODELS:
        probs, labels = predict_proba(texts, model, artifacts)
        return [_row(t, p, labels) for t, p in zip(texts, probs)]
    net, ckpt, tok = loaded(model, artifacts)
    data = _encode(texts, ckpt, tok)
    out: list[dict | None] = [None] * len(texts)
    for idx in sorted_batches(data.lengths, BATCH):  # similar lengths together: little padding
        ids, lengths, _ = data.batch(idx)
        with torch.inference_mode():
            logits, weights = forward_with_weights(net, model, ids, lengths)  # (B, C), (B, T)
            probs = torch.softmax(logits.float(), dim=-1)  # (B, C)
        for row, i in enumerate(idx):
            n = int(lengths[row])
            w = weights[row, :n]
            tokens = token_strings(tok, ids[row, :n].tolist())
            top = torch.argsort(w, descending=True)[:top_k].tolist()
            out[i] = _row(texts[i], probs[row], ckpt["labels"]) | {
                "top_tokens": [{"token": tokens[j], "position": j, "weight": round(float(w[j]), 4)} for j in top]}
    return out  # type: ignore[return-value]


def predict_proba(texts: list[str], model: str, artifacts: Path = ARTIFACTS) -> tuple[np.ndarray, list[str]]:
    """Class probabilities (N, C) of any model of the set (neural, baseline or the ensemble) and its labels."""
    if model == ENSEMBLE:
        return _predict_ensemble(texts, artifacts)
    if model in BASELINE_NAMES:
        return _predict_baseline(texts, model, artifacts)
    probs, labels = _predict_neural(texts, model, artifacts)
    return probs.astype(np.float64), labels


def _row(text: str, probs, labels: list[str]) -> dict:
    return {"text": text, "label": labels[int(probs.argmax())],
            "probabilities": {label: round(float(probs[c]), 4) for c, label in enumerate(labels)}}


def _encode(texts: list[str], ckpt: dict[str, Any], tok: Tokenizer) -> TokenSet:
    """The texts cleaned, tokenized and cut as the model was trained (its checkpoint records how)."""
    cleaned = clean_texts(texts, ckpt["clean_steps"])
    cut = ckpt["tokenize"]  # a checkpoint from before `truncation` kept the head
    return TokenSet.from_lists(encode(tok, cleaned, cut["kind"], cut["max_length"], truncation=cut.get("truncation", "head"),
                                      head_share=cut.get("head_share", 0.5)))


def _predict_neural(texts: list[str], model: str, artifacts: Path) -> tuple[np.ndarray, list[str]]:
    """Probabilities (N, C) and labels: the model and tokenizer loaded once, batches of similar length, no
    attention weights asked for (so the fused attention kernel runs), under torch.inference_mode."""
    net, ckpt, tok = loaded(model, artifacts)
    with torch.inference_mode():
        return score_ids(net, _encode(texts, ckpt, tok), BATCH // 2), ckpt["labels"]


@functools.lru_cache(maxsize=8)
def _baseline(path: str, stamp: tuple) -> dict[str, Any]:
    return pickle.loads(Path(path).read_bytes())


def _predict_baseline(texts: list[str], name: str, artifacts: Path) -> tuple[np.ndarray, list[str]]:
    path = artifacts / f"{name}.pkl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: fit it first (dvc repro baseline@{name})")
    saved = _baseline(str(path), _stamp(path))  # unpickled once per process
    return saved["pipeline"].predict_proba(clean_texts(texts, saved["clean_steps"])), saved["labels"]


def ensemble_spec(artifacts: Path = ARTIFACTS) -> dict:
    """artifacts/ensemble.json (members, weights, labels), checked to describe an ensemble that exists."""
    path = artifacts / f"{ENSEMBLE}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the ensemble first (dvc repro ensemble)")
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


def _predict_ensemble(texts: list[str], artifacts: Path) -> tuple[np.ndarray, list[str]]:
    """Each member's prediction, averaged with the weights the ensemble stage recorded."""
    spec = ensemble_spec(artifacts)
    return mix(spec, {m: predict_proba(texts, m, artifacts) for m in spec["members"]}), spec["labels"]


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
    parser.add_argument("--file", type=Path, help="a file with one text per line")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="gru_attention")
    parser.add_argument("--top", type=int, default=8, help="tokens to show for the attention models")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    texts = list(args.texts)
    if args.file:
        texts += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
    if not texts:
        parser.error("give texts on the command line or --file")
    try:
        rows = predict(texts, args.model, args.top)
    except FileNotFoundError as exc:
        print(f"reweigh predict: {exc}", file=sys.stderr)
        sys.exit(1)
    for row in rows:
        print(json.dumps(row) if args.json else format_prediction(row))


if __name__ == "__main__":
    main()
