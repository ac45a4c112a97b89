"""predict: classify new text with a trained model; for the attention model, show the tokens it weighed most.

    python -m flows.predict "a wonderful, moving film" "two hours I will never get back"
    python -m flows.predict --model gru --file reviews.txt          # one review per line
    python -m flows.predict --model baseline --json "..."           # TF-IDF + logistic regression

Text goes through the same cleaning steps and tokenizer the model was trained with (both recorded in
artifacts/<model>.pt), so a prediction here matches what the pipeline computed for the same review.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from flows.clean import clean_texts
from flows.common import ARTIFACTS
from flows.tokenize import encode
from models import build_model
from models.batching import TokenSet

TOKENIZER = ARTIFACTS / "tokenizer.json"
MODEL_CHOICES = ("gru_attention", "gru", "baseline")


def load_model(name: str, artifacts: Path = ARTIFACTS) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model from artifacts/<name>.pt, in eval mode, and its checkpoint's metadata."""
    path = artifacts / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it first (dvc repro train@{name})")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["model"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def token_strings(tok: Tokenizer, ids: list[int]) -> list[str]:
    """Readable tokens: BPE's word-start marker dropped."""
    return [(tok.id_to_token(i) or "?").replace("▁", "") or "▁" for i in ids]


def predict(texts: list[str], model: str = "gru_attention", top_k: int = 8, artifacts: Path = ARTIFACTS) -> list[dict]:
    """Label and class probabilities for each text; `top_tokens` (token, weight) for the attention model."""
    if model == "baseline":
        return _predict_baseline(texts, artifacts)
    net, ckpt = load_model(model, artifacts)
    tok = Tokenizer.from_file(str(artifacts / TOKENIZER.name))
    cleaned = clean_texts(texts, ckpt["clean_steps"])
    ids = encode(tok, cleaned, ckpt["tokenize"]["kind"], ckpt["tokenize"]["max_length"])
    data = TokenSet.from_lists(ids)
    batch_ids, lengths, _ = data.batch(list(range(len(data))))
    with torch.no_grad():
        if model == "gru_attention":
            logits, attention = net(batch_ids, lengths, return_attention=True)  # (N, C), {"pool": (N, T)}
        else:
            logits, attention = net(batch_ids, lengths), None  # (N, C)
        probs = torch.softmax(logits, dim=-1)  # (N, C)
    labels = ckpt["labels"]
    out = []
    for i, text in enumerate(texts):
        row = {"text": text, "label": labels[int(probs[i].argmax())],
               "probabilities": {label: round(float(probs[i, c]), 4) for c, label in enumerate(labels)}}
        if attention is not None:
            n = int(lengths[i])
            weights = attention["pool"][i, :n]
            tokens = token_strings(tok, batch_ids[i, :n].tolist())
            top = torch.argsort(weights, descending=True)[:top_k].tolist()
            row["top_tokens"] = [{"token": tokens[j], "position": j, "weight": round(float(weights[j]), 4)} for j in top]
        out.append(row)
    return out


def _predict_baseline(texts: list[str], artifacts: Path) -> list[dict]:
    path = artifacts / "baseline.pkl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the baseline first (dvc repro baseline)")
    saved = pickle.loads(path.read_bytes())
    probs = saved["pipeline"].predict_proba(clean_texts(texts, saved["clean_steps"]))
    labels = saved["labels"]
    return [{"text": t, "label": labels[int(p.argmax())],
             "probabilities": {label: round(float(p[c]), 4) for c, label in enumerate(labels)}} for t, p in zip(texts, probs)]


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
    parser.add_argument("--top", type=int, default=8, help="tokens to show for the attention model")
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
