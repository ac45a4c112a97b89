"""The pretrain stage never holds its corpus (flows/pretrain.py): it encodes batch by batch into a file, counts
and cuts a chunk at a time, and reads the file back by slices (models/batching.TokenFile). Each piece must give
what the whole-array way gives, so that pretrained.pt does not change."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from tokenizers import Tokenizer, models, pre_tokenizers

from flows.pretrain import corpus_ids
from models.batching import TokenFile, TokenSet
from models.embeddings import PAD_ID, cooccurrence, ppmi_svd_embeddings, token_counts
from models.language_model import cut_corpus, cut_documents

V = 50


def corpus(seed: int = 0, docs: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 30, size=docs)  # empty documents too
    ids = rng.integers(1, V, size=int(lengths.sum()))  # <pad> (0) among them
    return ids, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def whole_array_cooccurrence(ids: np.ndarray, starts: np.ndarray, window: int, chunk: int) -> sparse.csr_matrix:
    """The counting as it was: one document index per token, for the whole corpus at once."""
    doc = np.zeros(len(ids), dtype=np.int32)
    doc[starts[1:]] = 1
    doc = np.cumsum(doc)
    total = sparse.csr_matrix((V, V))
    for d in range(1, window + 1):
        for lo in range(0, len(ids) - d, chunk):
            hi = min(lo + chunk, len(ids) - d)
            a, b = ids[lo:hi], ids[lo + d:hi + d]
            keep = (doc[lo:hi] == doc[lo + d:hi + d]) & (a != PAD_ID) & (b != PAD_ID)
            w = np.full(int(keep.sum()), (window - d + 1) / window)
            total = total + sparse.coo_matrix((w, (a[keep], b[keep])), shape=(V, V)).tocsr()
    return (total + total.T).tocsr()


def test_a_token_file_reads_what_the_array_holds(tmp_path):
    ids, starts = corpus(3)
    path = tmp_path / "ids.u32"
    ids.astype(np.uint32).tofile(path)
    file = TokenFile(path)
    assert len(file) == len(ids)
    for lo, hi in [(0, len(ids)), (5, 17), (len(ids) - 3, len(ids) + 10), (9, 9), (-4, None)]:
        got = file[lo:hi]
        assert got.dtype == np.uint32 and np.array_equal(got, ids[lo:hi]), (lo, hi)
    with pytest.raises(TypeError, match="slices"):
        file[3]
    with pytest.raises(TypeError, match="contiguous"):
        file[::2]
    # a training batch gathers documents out of order from the file as from the array
    lengths = np.diff(np.append(starts, len(ids)))
    idx = np.array([7, 2, 30, 2])
    for a, b in zip(TokenSet(file, starts, lengths, np.zeros(len(starts), dtype=np.int64)).batch(idx),
                    TokenSet(ids, starts, lengths, np.zeros(len(starts), dtype=np.int64)).batch(idx)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    file.close()
    file.close()  # twice is fine (the stage closes it, then the object goes)


def test_counting_a_chunk_at_a_time_from_a_file_changes_nothing(tmp_path):
    ids, starts = corpus()
    path = tmp_path / "ids.u32"
    ids.astype(np.uint32).tofile(path)
    mapped = TokenFile(path)
    for chunk in (7, 64, 10_000):
        expected = whole_array_cooccurrence(ids, starts, 3, chunk)
        got = cooccurrence(mapped, starts, V, 3, chunk=chunk)
        assert (got != expected).nnz == 0 and got.nnz == expected.nnz, chunk
        assert np.array_equal(token_counts(mapped, V, chunk=chunk), np.bincount(ids, minlength=V))
    a, _ = ppmi_svd_embeddings(mapped, starts, V, 8, 3, seed=0)
    b, _ = ppmi_svd_embeddings(ids, starts, V, 8, 3, seed=0)
    assert np.array_equal(a, b)


def test_cutting_a_few_documents_at_a_time_into_a_file_changes_nothing(tmp_path):
    ids, starts = corpus(1)
    flat, offsets, lengths = cut_documents(ids, starts, 10, 4)
    for docs in (3, 1_000):
        got, got_offsets, got_lengths = cut_corpus(ids, starts, 10, 4, spill=tmp_path / f"cut{docs}.u32", docs=docs)
        assert isinstance(got, TokenFile) and np.array_equal(got, flat)
        assert np.array_equal(got_offsets, offsets) and np.array_equal(got_lengths, lengths)
    in_memory, _, _ = cut_corpus(ids, starts, 10, 4, docs=5)
    assert np.array_equal(in_memory, flat)


def test_encoding_in_batches_into_a_file_gives_the_same_corpus(tmp_path):
    words = [f"w{i}" for i in range(20)]
    tok = Tokenizer(models.WordLevel({w: i + 2 for i, w in enumerate(words)} | {"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 15, size=30)]
    ids, starts = corpus_ids(tok, texts, "word", 0, chunk=4)
    mapped, mapped_starts = corpus_ids(tok, iter([texts[:7], texts[7:]]), "word", 0, chunk=4, spill=tmp_path / "ids.u32")
    assert isinstance(mapped, TokenFile) and np.array_equal(mapped, ids) and np.array_equal(mapped_starts, starts)
