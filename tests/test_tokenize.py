"""Tokenizers of every kind: trained on training text, ids stable, decode back to the cleaned text."""
from __future__ import annotations

import pytest

from flows.tokenize import PAD, UNK, encode, train_tokenizer, truncate
from reweigh.params import TokenizeParams

TRAIN = [
    "the movie was great and i loved every minute of it",
    "a terrible film do not waste your time",
    "great acting but a dull plot",
    "i loved the music and the acting",
] * 20


@pytest.mark.parametrize("kind", ["word", "bpe", "wordpiece", "char"])
def test_each_kind_encodes_and_decodes_back(kind):
    cfg = TokenizeParams(kind=kind, vocab_size=300, min_frequency=1, max_length=200)
    tok = train_tokenizer(iter(TRAIN), cfg)
    assert tok.token_to_id(PAD) == 0 and tok.token_to_id(UNK) == 1
    text = "the acting was great"
    [ids] = encode(tok, [text], kind, cfg.max_length)
    assert ids and 0 not in ids and 1 not in ids  # every piece was seen in training
    assert tok.decode(ids) == text
    # truncation keeps the first max_length tokens, the last ones, or both ends
    [short] = encode(tok, [text], kind, 3)
    assert short == ids[:3]
    [tail] = encode(tok, [text], kind, 3, truncation="tail")
    assert tail == ids[-3:]
    [ends] = encode(tok, [text], kind, 3, truncation="head_tail", head_share=0.5)
    assert ends == ids[:2] + ids[-1:]


def test_truncate_keeps_what_it_says():
    seq = list(range(10))
    assert truncate(seq, 20, "head_tail") == seq, "a short document is kept whole"
    assert truncate(seq, 4, "head") == [0, 1, 2, 3]
    assert truncate(seq, 4, "tail") == [6, 7, 8, 9]
    assert truncate(seq, 4, "head_tail", 0.5) == [0, 1, 8, 9]
    assert truncate(seq, 4, "head_tail", 0.25) == [0, 7, 8, 9]
    assert truncate(seq, 4, "head_tail", 0.0) == [6, 7, 8, 9] and truncate(seq, 4, "head_tail", 1.0) == [0, 1, 2, 3]
    assert truncate("abcdefgh", 4, "head_tail") == "abgh", "characters too (the char kind)"
    with pytest.raises(ValueError, match="head, tail or head_tail"):
        truncate(seq, 4, "middle")


@pytest.mark.parametrize("kind", ["word", "bpe", "wordpiece", "char"])
def test_unseen_symbols_map_to_unk_and_vocab_is_bounded(kind):
    # Subword trainers always keep the whole alphabet, so the bound is set above its size.
    cfg = TokenizeParams(kind=kind, vocab_size=60, min_frequency=1, max_length=50)
    tok = train_tokenizer(iter(TRAIN), cfg)
    assert tok.get_vocab_size() <= 60
    [ids] = encode(tok, ["ζζζ"], kind, 50)
    unk = tok.token_to_id(UNK)
    assert unk in ids
    assert set(ids) - {unk} <= {tok.token_to_id("▁")}  # bpe keeps its word-boundary marker


def test_char_fast_path_matches_the_tokenizer():
    cfg = TokenizeParams(kind="char", vocab_size=20, min_frequency=1, max_length=40)
    tok = train_tokenizer(iter(TRAIN), cfg)
    texts = ["great music, zz €", "the end"]
    fast = encode(tok, texts, "char", 40)
    slow = [tok.encode(t).ids[:40] for t in texts]
    assert fast == slow


def test_min_frequency_drops_rare_words():
    cfg = TokenizeParams(kind="word", vocab_size=1000, min_frequency=2, max_length=50)
    tok = train_tokenizer(iter(TRAIN + ["hapax"]), cfg)
    assert tok.token_to_id("hapax") is None
    assert tok.token_to_id("great") is not None


def test_the_stage_encodes_batch_by_batch_into_the_same_table_as_encoding_it_whole(tmp_path, monkeypatch):
    """fit_texts and write_tokens read the cleaned table 8 rows at a time (write_tokens writes each batch's
    labelled rows as a row group): the tokenizer and the table equal fitting and encoding everything at once,
    and the counts are the whole table's."""
    import polars as pl
    import pyarrow.parquet as pq

    from flows import tokenize
    from reweigh import io

    cfg = TokenizeParams(kind="word", vocab_size=40, min_frequency=1, max_length=10)
    texts = [t + f" extra{i}" for i, t in enumerate(TRAIN[:60])]
    splits = ["train", "test", "unsup"] * 20
    df = pl.DataFrame({"id": [str(i) for i in range(60)], "text": texts, "label": [None if s == "unsup" else ("pos", "neg")[i % 2]
                       for i, s in enumerate(splits)], "split": splits})
    clean = tmp_path / "clean.parquet"
    df.write_parquet(clean)
    monkeypatch.setattr(io, "ROW_GROUP", 8)
    fit = [t for t, s in zip(texts, splits) if s in ("train", "unsup")]
    assert list(tokenize.fit_texts(clean)) == fit
    tok = train_tokenizer(tokenize.fit_texts(clean), cfg)
    assert tok.to_str() == train_tokenizer(iter(fit), cfg).to_str()
    tok.save(str(tmp_path / "tokenizer.json"))
    n = tokenize.write_tokens(clean, tmp_path / "tokenizer.json", cfg, ["neg", "pos"], tmp_path / "tokens.parquet")
    out = pl.read_parquet(tmp_path / "tokens.parquet")
    labelled = df.filter(pl.col("split") != "unsup")
    whole = encode(tok, labelled["text"].to_list(), "word", 10, truncation=cfg.truncation, head_share=cfg.head_share)
    assert out["ids"].to_list() == whole and out["id"].to_list() == labelled["id"].to_list()
    assert out["label_id"].to_list() == [1 if label == "pos" else 0 for label in labelled["label"]]
    assert out["length"].to_list() == [len(ids) for ids in whole]
    assert pq.ParquetFile(tmp_path / "tokens.parquet").metadata.num_row_groups == 8  # ceil(60 / 8) batches read
    unk = tok.token_to_id(UNK)
    assert n == {"documents": 40, "tokens": sum(map(len, whole)), "truncated": sum(len(ids) >= 10 for ids in whole),
                 "unk": sum(i == unk for ids in whole for i in ids)}
    assert n["unk"] > 0 and 0 < n["truncated"] < 40  # the counts are not vacuous


def test_the_stage_writes_an_empty_table_with_its_columns_when_nothing_is_labelled(tmp_path):
    import polars as pl

    from flows import tokenize

    cfg = TokenizeParams(kind="word", vocab_size=40, min_frequency=1, max_length=6)
    train_tokenizer(iter(TRAIN), cfg).save(str(tmp_path / "tokenizer.json"))
    pl.DataFrame({"id": ["0"], "text": ["the movie"], "label": [None], "split": ["unsup"]},
                 schema={c: pl.String for c in ("id", "text", "label", "split")}).write_parquet(tmp_path / "clean.parquet")
    n = tokenize.write_tokens(tmp_path / "clean.parquet", tmp_path / "tokenizer.json", cfg, ["neg", "pos"], tmp_path / "t.parquet")
    assert n["documents"] == 0
    out = pl.read_parquet(tmp_path / "t.parquet")
    assert out.height == 0 and out.columns == ["id", "split", "label", "label_id", "ids", "length"]
