"""Drift between the champion's data and the new data, checked before a challenger trains (seconds).

The champion's data is the workspace's data/ingested.parquet and artifacts/tokenizer.json (what the
models in use were trained on); the new data is what the ingest stage would make of the sources now, made
in memory with the stage's own code (flows/ingest.py `prepare`: validation, dedupe, splits). New rows are
the labelled rows whose (text, label) the old data does not have (or has fewer times). Five checks, each a Great Expectations
expectation on columns computed here in polars (as the data-hygiene checks in adapters/hygiene.py are),
so their results read like the ingest stage's validation results, with sample rows and what to change:

    label_shift      each label's share of the labelled rows, old → new: the largest change (L-infinity)
    length_shift     the new rows' token counts at the 10th, 50th and 90th percentile against the old rows'
    unknown_tokens   the share of the new rows' tokens the champion's tokenizer does not know, against the old rows'
    duplicates       new rows that copy or nearly copy an old row with the same label
    label_conflicts  new rows whose text, or a near copy of it, is in the old data with another label

A near copy: the Jaccard similarity of the two texts' sets of word trigrams (after clean.steps) is at least
retrain.drift.near_duplicate ("Re: " put before a 15-word text keeps 13 of its 14 trigrams: 0.93); trigrams
in more than 1% of the old texts (and 50) are left out of both sets: too common to say anything of copying.
Limits in params.yaml (retrain.drift); a check in retrain.drift.block stops the retrain, the others warn.

    python -m flows.retrain.drift [--overrides JSON]   # in the project root: the checks as JSON on stdout
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

OLD_TABLE = Path("data/ingested.parquet")
TOKENIZER = Path("artifacts/tokenizer.json")
QUANTILES = (0.1, 0.5, 0.9)
SAMPLE_OLD = 5000  # old rows the unknown-token baseline and the length quantiles are measured on (seeded)
CHUNK = 1000  # new rows compared with all old ones at a time (bounded memory)
COMMON_SHARE, COMMON_MIN = 0.01, 50  # a trigram in more old texts than max(50, 1%) is too common to mark a copy

FIXES = {
    "label_shift": ("look at the new rows of the label that grew (a labelling or export bug?); if the shift is real, "
                    "raise retrain.drift.label_shift or take label_shift out of retrain.drift.block"),
    "length_shift": ("check that the new texts are whole (not cut, not concatenated) and are the same kind of text; "
                     "if they are, raise retrain.drift.length_shift"),
    "unknown_tokens": ("the new texts use words the champion never saw (another language or domain, or an encoding "
                       "problem?); if that is expected, raise retrain.drift.unknown_tokens"),
    "duplicates": ("remove the repeated rows from the source (or set dataset.dedupe), or raise retrain.drift.duplicates"),
    "label_conflicts": ("correct the labels of the new rows shown (or of their old twins, if the old ones are wrong); "
                        "to train on them anyway take label_conflicts out of retrain.drift.block"),
}


# ---------------------------------------------------------------- near copies


def trigram_sets(texts: list[str]):
    """Binary (N, 2^20) sparse rows: the hashed word trigrams of each text (texts under three words: their words)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    padded = [t if len(t.split()) >= 3 else f"{t} \x00short\x00 \x00text\x00" for t in texts]  # a short text: one shingle
    vec = HashingVectorizer(analyzer="word", ngram_range=(3, 3), token_pattern=r"\S+", lowercase=False,
                            binary=True, norm=None, alternate_sign=False, n_features=2 ** 20, dtype=np.float32)
    return vec.transform(padded).tocsr()


def nearest_old(new_texts: list[str], old_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each new text, the most similar old text by word-trigram Jaccard: (index (N,) or -1, similarity (N,))."""
    best = np.full(len(new_texts), -1, dtype=np.int64)
    score = np.zeros(len(new_texts), dtype=np.float64)
    if not new_texts or not old_texts:
        return best, score
    import scipy.sparse as sp

    old = trigram_sets(old_texts)  # (M, F)
    # trigrams in more than 1% of the old texts ("one of the") say nothing about copying and would pair every
    # text with thousands: both sides drop them, so the product stays sparse on a million documents
    df = np.bincount(old.indices, minlength=old.shape[1])  # (F,) old texts holding each trigram
    keep = sp.diags((df <= max(COMMON_MIN, COMMON_SHARE * old.shape[0])).astype(np.float32))  # (F, F)
    old = (old @ keep).tocsr()
    old.eliminate_zeros()
    old_sizes = np.asarray(old.sum(axis=1)).ravel()  # (M,)
    old_t = old.T.tocsr()  # (F, M)
    for start in range(0, len(new_texts), CHUNK):
        new = (trigram_sets(new_texts[start:start + CHUNK]) @ keep).tocsr()  # (n, F)
        new.eliminate_zeros()
        new_sizes = np.asarray(new.sum(axis=1)).ravel()  # (n,)
        shared = (new @ old_t).tocoo()  # (n, M): trigrams in common, only for pairs that share one
        if shared.nnz == 0:
            continue
        jaccard = shared.data / (new_sizes[shared.row] + old_sizes[shared.col] - shared.data)  # (nnz,)
        order = np.lexsort((-jaccard, shared.row))  # by row, the most similar first
        rows, first = np.unique(shared.row[order], return_index=True)
        best[start + rows] = shared.col[order][first]
        score[start + rows] = jaccard[order][first]
    return best, score


# ---------------------------------------------------------------- the checks


def token_counts(texts: list[str], tokenizer_file: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N,), of them unknown to the tokenizer (N,)) per text, untruncated."""
    from tokenizers import Tokenizer

    from flows.tokenize import UNK, encode

    tok = Tokenizer.from_file(str(tokenizer_file))
    unk = tok.token_to_id(UNK)
    ids = encode(tok, texts, kind, max_length=10 ** 9)
    return (np.array([len(x) for x in ids], dtype=np.int64),
            np.array([int(np.count_nonzero(np.asarray(x) == unk)) for x in ids], dtype=np.int64))


def helper_frame(old: pl.DataFrame, new: pl.DataFrame, clean_steps: list[str], tokenizer_file: Path | None,
                 kind: str, near: float, seed: int = 0) -> tuple[pl.DataFrame, dict[str, Any]]:
    """One row per labelled row of the new table, with the columns the checks read, and what was measured.

    Columns: id, text, label, split, batch ("new" for the new rows, else "old"), is_<label> (0/1),
    tokens, unknown_share, copy_of (the old row's id it copies with the same label), conflicts_with (the old
    row's id it copies with another label), old_label, similarity."""
    from flows.clean import clean_frame

    old = old.filter(pl.col("split") != "unsup").select("id", "text", "label")
    new = new.filter(pl.col("split") != "unsup").select("id", "text", "label", "split")
    # a row is old while the old data has as many rows with its text and label: a copy appended again is new
    seen = old.group_by("text", "label").len("old_copies")
    new = (new.with_columns(pl.int_range(pl.len()).over("text", "label").alias("_nth"))
           .join(seen, on=["text", "label"], how="left", maintain_order="left", nulls_equal=True)
           .with_columns(pl.when(pl.col("_nth") < pl.col("old_copies").fill_null(0)).then(pl.lit("old")).otherwise(pl.lit("new"))
                         .alias("batch"))
           .drop("_nth", "old_copies"))
    fresh = new.filter(pl.col("batch") == "new")
    old_clean = clean_frame(old.select("text"), clean_steps)["text"].fill_null("").to_list()
    fresh_clean = clean_frame(fresh.select("text"), clean_steps)["text"].fill_null("").to_list()
    index, similarity = nearest_old(fresh_clean, old_clean)
    twin = np.where(similarity >= near, index, -1)
    old_ids, old_labels = old["id"].to_list(), old["label"].to_list()
    twin_label = [old_labels[i] if i >= 0 else None for i in twin]
    same = [t is not None and t == lab for t, lab in zip(twin_label, fresh["label"].to_list())]
    fresh = fresh.with_columns(
        pl.Series("old_label", twin_label, dtype=pl.String),
        pl.Series("similarity", np.round(similarity, 3)),
        pl.Series("copy_of", [old_ids[i] if i >= 0 and s else None for i, s in zip(twin, same)], dtype=pl.String),
        pl.Series("conflicts_with", [old_ids[i] if i >= 0 and not s else None for i, s in zip(twin, same)], dtype=pl.String),
    )
    sample = old.sample(n=min(SAMPLE_OLD, old.height), seed=seed) if old.height else old
    measured: dict[str, Any] = {"old_rows": old.height, "new_rows": fresh.height, "new_table_rows": new.height}
    if tokenizer_file is not None and tokenizer_file.is_file() and fresh.height:
        old_tokens, old_unknown = token_counts(clean_frame(sample.select("text"), clean_steps)["text"].fill_null("").to_list(),
                                               tokenizer_file, kind)
        new_tokens, new_unknown = token_counts(fresh_clean, tokenizer_file, kind)
        fresh = fresh.with_columns(pl.Series("tokens", new_tokens),
                                   pl.Series("unknown_share", new_unknown / np.maximum(new_tokens, 1)))
        measured["old_unknown_share"] = float(old_unknown.sum() / max(old_tokens.sum(), 1))
        measured["new_unknown_share"] = float(new_unknown.sum() / max(new_tokens.sum(), 1))
        measured["old_token_quantiles"] = [float(q) for q in np.quantile(old_tokens, QUANTILES)] if old_tokens.size else []
        measured["new_token_quantiles"] = [float(q) for q in np.quantile(new_tokens, QUANTILES)]
    labels = sorted(set(old["label"].to_list()) | set(new["label"].to_list()))
    old_share = {lab: float(np.mean(np.array(old["label"].to_list()) == lab)) if old.height else 0.0 for lab in labels}
    new_share = {lab: float(np.mean(np.array(new["label"].to_list()) == lab)) if new.height else 0.0 for lab in labels}
    measured["label_shares"] = {lab: [round(old_share[lab], 4), round(new_share[lab], 4)] for lab in labels}
    measured["label_shift"] = round(max((abs(new_share[lab] - old_share[lab]) for lab in labels), default=0.0), 4)
    frame = new.join(fresh.drop("text", "label", "split", "batch"), on="id", how="left", maintain_order="left")
    frame = frame.with_columns(*[(pl.col("label") == lab).cast(pl.Float64).alias(f"is_{lab}") for lab in labels])
    return frame, measured | {"old_share": old_share}


def expectations(measured: dict[str, Any], limits: Any) -> list:
    """The GX expectations of the five checks (severity critical where retrain.drift.block names the check)."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E, batch = gx.expectations, Column("batch")
    severity = {name: ("critical" if name in limits.block else "warning") for name in FIXES}

    def meta(check: str, words: str, show: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"check": check, "words": words, "fix": FIXES[check], "show": list(show)}

    out = []
    for lab, share in measured["old_share"].items():  # L-infinity <= limit  <=>  every label's share within +- limit
        out.append(E.ExpectColumnMeanToBeBetween(
            column=f"is_{lab}", min_value=max(share - limits.label_shift, 0.0), max_value=min(share + limits.label_shift, 1.0),
            severity=severity["label_shift"], meta=meta("label_shift", f"share of label '{lab}' (was {share:.1%})")))
    if measured["new_rows"] and measured.get("old_token_quantiles"):
        factor = 1 + limits.length_shift
        out.append(E.ExpectColumnQuantileValuesToBeBetween(
            column="tokens", row_condition=batch == "new", severity=severity["length_shift"],
            quantile_ranges={"quantiles": list(QUANTILES),
                             "value_ranges": [[q / factor, q * factor] for q in measured["old_token_quantiles"]]},
            meta=meta("length_shift", "new rows' token counts (10th, 50th, 90th percentile)")))
        out.append(E.ExpectColumnMeanToBeBetween(
            column="unknown_share", row_condition=batch == "new", severity=severity["unknown_tokens"],
            max_value=measured["old_unknown_share"] + limits.unknown_tokens,
            meta=meta("unknown_tokens", f"new rows' mean share of unknown tokens (old rows: {measured['old_unknown_share']:.2%})")))
    if measured["new_rows"]:
        out.append(E.ExpectColumnValuesToBeNull(
            column="copy_of", row_condition=batch == "new", mostly=1 - limits.duplicates, severity=severity["duplicates"],
            meta=meta("duplicates", "new rows that copy an old row with the same label", ("copy_of", "similarity"))))
        out.append(E.ExpectColumnValuesToBeNull(
            column="conflicts_with", row_condition=batch == "new", mostly=1 - limits.label_conflicts,
            severity=severity["label_conflicts"],
            meta=meta("label_conflicts", "new rows whose text is in the old data with another label",
                      ("conflicts_with", "old_label", "similarity"))))
    return out


def check(old: pl.DataFrame, new: pl.DataFrame, limits: Any, clean_steps: list[str], tokenizer_file: Path | None,
          kind: str, dataset: str = "dataset") -> dict[str, Any]:
    """Every check's result: {checks: [{check, words, ok, action, value, limit, rows, sample_rows, fix}], measured, blocked}."""
    from adapters.expectations import run_suite

    frame, measured = helper_frame(old, new, clean_steps, tokenizer_file, kind, limits.near_duplicate)
    suite = expectations(measured, limits)
    results = run_suite(frame, suite, f"{dataset}_drift".replace(" ", "_"))
    ran = {e.meta["check"] for e in suite}
    checks: dict[str, dict[str, Any]] = {}
    rows = {"duplicates": int(frame["copy_of"].is_not_null().sum()) if "copy_of" in frame.columns else 0,
            "label_conflicts": int(frame["conflicts_with"].is_not_null().sum()) if "conflicts_with" in frame.columns else 0}
    for name in FIXES:
        checks[name] = {"check": name, "ok": True, "action": "block" if name in limits.block else "warn", "found": [],
                        "sample_rows": [], "fix": FIXES[name], **_measure(name, measured, limits, rows)}
    for result in results:
        name = result.check or ""
        entry = checks[name]
        if not result.success:
            entry["ok"] = False
            entry["found"].append(result.describe().split(": ", 1)[-1])
            entry["sample_rows"] += result.sample_rows
    out = [checks[name] for name in FIXES if name in ran or name == "label_shift"]
    blocked = [c["check"] for c in out if not c["ok"] and c["action"] == "block"]
    return {"checks": out, "blocked": blocked, "warned": [c["check"] for c in out if not c["ok"] and c["action"] == "warn"],
            "measured": {k: v for k, v in measured.items() if k != "old_share"}}


def _measure(name: str, measured: dict[str, Any], limits: Any, rows: dict[str, int]) -> dict[str, Any]:
    """The check's value and limit in words, for the artifact's table."""
    n = max(measured["new_rows"], 1)
    if name == "label_shift":
        shares = ", ".join(f"{lab} {a:.1%} → {b:.1%}" for lab, (a, b) in measured["label_shares"].items())
        return {"value": measured["label_shift"], "limit": limits.label_shift, "detail": shares}
    if name == "length_shift":
        old, new = measured.get("old_token_quantiles"), measured.get("new_token_quantiles")
        detail = f"tokens at 10/50/90%: old {'/'.join(f'{q:.0f}' for q in old or [])}, new {'/'.join(f'{q:.0f}' for q in new or [])}"
        ratio = max((max(b / a, a / b) - 1 for a, b in zip(old or [], new or []) if a > 0 and b > 0), default=0.0)
        return {"value": round(ratio, 3), "limit": limits.length_shift, "detail": detail}
    if name == "unknown_tokens":
        old, new = measured.get("old_unknown_share", 0.0), measured.get("new_unknown_share", 0.0)
        return {"value": round(new - old, 4), "limit": limits.unknown_tokens, "detail": f"unknown tokens: old {old:.2%}, new {new:.2%}"}
    share = rows[name] / n
    return {"value": round(share, 4), "limit": getattr(limits, name),
            "detail": f"{rows[name]:,} of {measured['new_rows']:,} new rows" + (
                f" (near copies: word-trigram Jaccard ≥ {limits.near_duplicate})")}


# ---------------------------------------------------------------- the new data, as ingest would make it


def new_table(p: Any) -> tuple[str, pl.DataFrame]:
    """(the dataset's title, what the ingest stage would write now), without writing anything."""
    from adapters.base import check_frame, title_of
    from adapters.expectations import ValidationFailed
    from adapters.hygiene import Hygiene
    from adapters.registry import get_adapter
    from flows.common import cache_dir
    from flows.ingest import prepare

    adapter = get_adapter(p.dataset.name, p.dataset.options)
    raw = check_frame(adapter.load(cache_dir()), title_of(adapter))
    adapter, df, report = prepare(adapter, raw, p.dataset, p.seed, Hygiene.from_params(p.dataset, p.clean.steps))
    if df is None:
        raise ValidationFailed(report)
    return title_of(adapter), df


def main(argv: list[str] | None = None) -> None:
    import reweigh  # noqa: F401  (quiet, offline library defaults)
    from reweigh.params import apply_overrides, load_raw_params, validate_params

    parser = argparse.ArgumentParser(prog="python -m flows.retrain.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", default="{}", help="params.yaml keys → values (JSON), as the challenger gets them")
    args = parser.parse_args(argv)
    p = validate_params(apply_overrides(load_raw_params("params.yaml"), json.loads(args.overrides)), "params.yaml")
    if not OLD_TABLE.is_file():
        json.dump({"checks": [], "blocked": [], "warned": [], "measured": {}, "skipped": f"no {OLD_TABLE}: no champion data"},
                  sys.stdout)
        return
    title, new = new_table(p)
    old = pl.read_parquet(OLD_TABLE)
    tokenizer = TOKENIZER if TOKENIZER.is_file() else None
    result = check(old, new, p.retrain.drift, list(p.clean.steps), tokenizer, p.tokenize.kind, title)
    json.dump(result | {"dataset": title}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
