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
