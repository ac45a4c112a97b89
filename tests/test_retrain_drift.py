"""Drift checks before a retrain trains (flows/retrain/drift.py): real GX validation, a real tokenizer."""
from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from conftest import review
from flows.retrain.drift import check, nearest_old
from reweigh.params import DriftParams, TokenizeParams

STEPS = ["strip_markup", "unescape_entities", "lowercase", "remove_punctuation", "normalize_whitespace"]


def table(rows: list[tuple[str, str, str]], start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"id": [str(start + i) for i in range(len(rows))], "text": [r[0] for r in rows],
                         "label": [r[1] for r in rows], "split": [r[2] for r in rows]})


def reviews(n: int, seed: int, split: str = "train") -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [(review(rng, label), label, split) for label in ("neg", "pos") for _ in range(n // 2)]


@pytest.fixture(scope="module")
def old() -> pl.DataFrame:
    return table(reviews(160, 1) + reviews(40, 2, "test"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, old) -> Path:
    from flows.tokenize import save_tokenizer, train_tokenizer
    from flows.clean import clean_texts

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(clean_texts(old["text"], STEPS), TokenizeParams(kind="word", vocab_size=500)), path)
    return path


def test_a_prefixed_copy_is_a_near_copy_and_a_different_text_is_not() -> None:
    old = ["the plot was thin but the acting was superb and the music carried every scene to its end",
           "a dull film with nothing to say"]
    new = ["re the plot was thin but the acting was superb and the music carried every scene to its end",
           "an entirely different text about cooking pasta at home with friends"]
    index, similarity = nearest_old(new, old)
    assert index[0] == 0 and similarity[0] >= 0.9  # 17 of its 18 trigrams are the old text's
    assert similarity[1] < 0.2


def test_a_clean_batch_passes_every_check(old, tokenizer) -> None:
    new = pl.concat([old, table(reviews(40, 3), start=1000)])
    found = check(old, new, DriftParams(), STEPS, tokenizer, "word", "reviews.csv")
    assert found["measured"]["new_rows"] == 40
    assert [c["check"] for c in found["checks"]] == ["label_shift", "length_shift", "unknown_tokens", "duplicates", "label_conflicts"]
    assert all(c["ok"] for c in found["checks"]), found["checks"]
    assert found["blocked"] == [] and found["warned"] == []


def test_flipped_near_copies_show_as_label_shift_and_conflicts_with_sample_rows(old, tokenizer) -> None:
    negatives = old.filter(pl.col("label") == "neg")
    flipped = [(f"Re: {t}", "pos", "train") for t in negatives["text"].to_list()] * 3  # 300 copies, the wrong label
    new = pl.concat([old, table(flipped, start=1000)])
    found = check(old, new, DriftParams(), STEPS, tokenizer, "word", "reviews.csv")
    checks = {c["check"]: c for c in found["checks"]}
    assert not checks["label_shift"]["ok"] and checks["label_shift"]["value"] == pytest.approx(0.3, abs=0.01)  # pos 50% → 80%
    assert "neg 50.0% → 20.0%" in checks["label_shift"]["detail"]
    conflicts = checks["label_conflicts"]
    assert not conflicts["ok"] and conflicts["value"] == 1.0 and conflicts["action"] == "warn"
    row = conflicts["sample_rows"][0]
    assert row["text"].startswith("Re: ") and row["label"] == "pos" and row["old_label"] == "neg"
    assert row["conflicts_with"] in set(negatives["id"].to_list())
    assert "correct the labels" in conflicts["fix"]
    assert checks["duplicates"]["ok"] and checks["unknown_tokens"]["ok"] and checks["length_shift"]["ok"]
    assert found["blocked"] == [] and set(found["warned"]) == {"label_shift", "label_conflicts"}
    blocking = check(old, new, DriftParams(block=["label_conflicts"]), STEPS, tokenizer, "word", "reviews.csv")
    assert blocking["blocked"] == ["label_conflicts"] and blocking["warned"] == ["label_shift"]


def test_text_the_champion_cannot_read_and_longer_texts_are_flagged(old, tokenizer) -> None:
    rng = random.Random(4)
    foreign = [(" ".join("".join(rng.choice("xqzjkvw") for _ in range(6)) for _ in range(120)), lab, "train")
               for lab in ("neg", "pos") for _ in range(20)]
    found = check(old, pl.concat([old, table(foreign, start=1000)]), DriftParams(), STEPS, tokenizer, "word", "reviews.csv")
    checks = {c["check"]: c for c in found["checks"]}
    assert not checks["unknown_tokens"]["ok"] and checks["unknown_tokens"]["value"] > 0.9
    assert not checks["length_shift"]["ok"] and checks["length_shift"]["value"] > 1.5  # 120 words against about 40
    assert checks["label_shift"]["ok"] and checks["label_conflicts"]["ok"]


def test_copies_with_the_same_label_are_duplicates_not_conflicts(old, tokenizer) -> None:
    copies = [(f"{t} !", lab, "train") for t, lab in zip(old["text"].to_list()[:100], old["label"].to_list()[:100])]
    found = check(old, pl.concat([old, table(copies, start=1000)]), DriftParams(duplicates=0.2), STEPS, tokenizer, "word", "x")
    checks = {c["check"]: c for c in found["checks"]}
    assert not checks["duplicates"]["ok"] and checks["duplicates"]["value"] == 1.0
    assert checks["label_conflicts"]["ok"]
    assert checks["duplicates"]["sample_rows"][0]["copy_of"] is not None


def test_a_row_appended_again_is_a_new_row_that_copies_an_old_one(old, tokenizer) -> None:
    again = old.head(30).with_columns(pl.Series("id", [str(2000 + i) for i in range(30)]))  # the same 30 rows twice
    found = check(old, pl.concat([old, again]), DriftParams(duplicates=0.5), STEPS, tokenizer, "word", "x")
    assert found["measured"]["new_rows"] == 30
    duplicates = {c["check"]: c for c in found["checks"]}["duplicates"]
    assert duplicates["value"] == 1.0 and not duplicates["ok"]
