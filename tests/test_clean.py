"""The clean stage: each named step, their order, and agreement with the usual `re` recipe on real reviews."""
from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import polars as pl
import pytest

from flows.clean import STEPS, clean_frame, clean_texts

ALL = list(STEPS)
ROOT = Path(__file__).resolve().parents[1]


def course_recipe(text: str) -> str:
    """The per-document recipe taught in the course: the reference for behaviour."""
    text = text.lower()
    text = text.replace("'", "")
    text = re.sub(r"<br\s*/?>", " ", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def test_each_step_does_one_thing():
    raw = "A <b>Great</b>&nbsp;film&#33;<br /><br />Don't  miss   it &amp; &#x263A;"
    assert clean_texts([raw], ["strip_markup"]) == ["A  Great &nbsp;film&#33;  Don't  miss   it &amp; &#x263A;"]
    assert clean_texts([raw], ["unescape_entities"]) == ["A <b>Great</b>\xa0film!<br /><br />Don't  miss   it & ☺"]
    assert clean_texts([raw], ["lowercase"]) == [raw.lower()]
    assert clean_texts(["Don't stop, ok?"], ["remove_punctuation"]) == ["Dont stop  ok "]
    assert clean_texts(["  a \t b\n\nc  "], ["normalize_whitespace"]) == ["a b c"]
    assert clean_texts([raw], ALL) == ["a great film dont miss it"]


def test_steps_can_be_switched_off_and_nulls_pass_through():
    assert clean_texts(["Hello <i>World</i>!", None], ["lowercase"]) == ["hello <i>world</i>!", None]
    assert clean_texts(["Keep <i>THIS</i>"], []) == ["Keep <i>THIS</i>"]


def test_order_matters_entities_unescaped_after_markup_is_stripped():
    # An escaped tag is text the author wrote, not markup: it survives stripping as words.
    assert clean_texts(["use &lt;br&gt; tags"], ALL) == ["use br tags"]
    assert clean_texts(["x<y and z>w"], ["strip_markup"]) == ["x w"]


def _real_reviews(limit: int) -> list[str]:
    archive = Path(os.environ.get("REWEIGH_IMDB_ARCHIVE") or ROOT.parent / "shared/datasets/imdb/aclImdb_v1.tar.gz")
    if not archive.exists():
        pytest.skip(f"no IMDB archive at {archive} (set REWEIGH_IMDB_ARCHIVE)")
    texts = []
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.isfile() and re.match(r"aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$", member.name):
                texts.append(tar.extractfile(member).read().decode("utf-8"))
                if len(texts) >= limit:
                    break
    return texts


def test_agrees_with_the_course_recipe_on_real_imdb_reviews():
    reviews = _real_reviews(5000)
    ours = clean_texts(reviews, ALL)
    ref = [course_recipe(t) for t in reviews]
    # Where the recipe is right (no markup but <br />, no entities) the two must agree exactly.
    plain = [i for i, t in enumerate(reviews) if not re.search(r"<(?!br\s*/?>)[^>]*>|&", t)]
    assert len(plain) > 4000
    disagree = [i for i in plain if ours[i] != ref[i]]
    assert disagree == [], f"{len(disagree)} plain reviews differ, e.g. {reviews[disagree[0]][:200]!r}"
    # Elsewhere ours is the better one: no tag or entity is left in any cleaned review.
    assert not any(re.search(r"<[^>]*>|&\w+;|&#\d+;", t) for t in ours)


def test_fused_punctuation_and_whitespace_pass_equals_the_two_steps_one_after_the_other():
    # clean_expr runs remove_punctuation + normalize_whitespace as one regex pass when they are adjacent.
    tricky = ["  Don't!!  stop\t\t-- ok?\n", "a.b", "½ é_ü — «x»\u2003y\u00a0z", "...", "", " ", "x", "it's  'quoted' "]
    samples = tricky + _real_reviews(2000)
    fused = clean_texts(samples, ["remove_punctuation", "normalize_whitespace"])
    stepwise = clean_texts(clean_texts(samples, ["remove_punctuation"]), ["normalize_whitespace"])
    assert fused == stepwise
    assert fused[:3] == ["Dont stop ok", "a b", "½ é_ü x y z"]


def test_clean_frame_runs_slices_in_parallel_and_keeps_rows_in_order(monkeypatch):
    reviews = _real_reviews(3000)
    df = pl.DataFrame({"id": range(len(reviews)), "text": reviews, "split": ["train"] * len(reviews)})
    monkeypatch.setattr(pl, "thread_pool_size", lambda: 3)  # three slices, whatever this machine's cores
    out = clean_frame(df, ALL)
    assert out.columns == df.columns and out["id"].to_list() == list(range(len(reviews)))
    assert out["text"].to_list() == clean_texts(reviews, ALL)


def test_the_stage_streams_batch_by_batch_into_the_same_table_as_cleaning_it_whole(tmp_path, monkeypatch):
    """The clean flow reads and writes 7 rows at a time: each batch decodes only the numeric entities it holds
    (unescape_entities builds its table per batch), the rows keep their order, each batch is a row group."""
    import pyarrow.parquet as pq

    from flows.clean import clean_flow
    from reweigh import io

    rows = [f"Row {i}: <i>caf&#233;</i> &#x263A; &amp; it's {'se&#241;or ' if i % 5 == 0 else ''}GOOD!" for i in range(100)]
    df = pl.DataFrame({"id": [str(i) for i in range(100)], "text": rows, "label": ["pos", "neg"] * 50, "split": ["train"] * 100})
    (tmp_path / "data").mkdir()
    df.write_parquet(tmp_path / "data" / "ingested.parquet")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(io, "ROW_GROUP", 7)
    clean_flow.fn()
    out = pl.read_parquet(tmp_path / "data" / "clean.parquet")
    assert out.equals(clean_frame(df, ALL))
    assert out["text"][0] == "row 0 café its señor good" and out["text"][1] == "row 1 café its good"
    assert pq.ParquetFile(tmp_path / "data" / "clean.parquet").metadata.num_row_groups == 15  # ceil(100 / 7)
