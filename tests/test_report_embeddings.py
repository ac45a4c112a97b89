"""The report's semantic-vector-space section: embeddings that recover a known similarity, probe choice,
probe lookup, the one-hot arithmetic and the figure (flows/report/embeddings.py, models/embeddings.py)."""
from __future__ import annotations

import numpy as np
import pytest

from flows.report.embeddings import (
    class_counts, closest_opposite, cue_probes, fig_embedding_space, log_odds, lookup_probes, min_count, neighbours,
    one_hot_cost, projection, same_class_share, section_markdown,
)
from models.embeddings import nearest_neighbours, ppmi_svd_embeddings

# A corpus where the answer is known: A and B occur only between the same "x" context words, C and D only
# between "y" words, so A's nearest vector must be B's and C's must be D's.
A, B, C, D = 2, 3, 4, 5
X_CONTEXT, Y_CONTEXT = list(range(6, 14)), list(range(14, 22))
VOCAB = 22


def synthetic_corpus(n_docs: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(n_docs):
        context, pair = (X_CONTEXT, (A, B)) if d % 2 else (Y_CONTEXT, (C, D))
        doc = []
        for _ in range(4):  # four short phrases: two context words, one of the pair, two context words
            doc += [*rng.choice(context, 2), rng.choice(pair), *rng.choice(context, 2)]
        docs.append(np.array(doc, dtype=np.int64))
    starts = np.cumsum([0] + [len(doc) for doc in docs[:-1]]).astype(np.int64)
    return np.concatenate(docs), starts


def test_ppmi_svd_puts_interchangeable_tokens_next_to_each_other_and_is_deterministic():
    ids, starts = synthetic_corpus()
    vectors, counts = ppmi_svd_embeddings(ids, starts, VOCAB, dim=6, window=2, seed=0)
    assert vectors.shape == (VOCAB, 6) and counts[A] > 0 and not vectors[0].any()
    assert nearest_neighbours(vectors, A, k=3)[0][0] == B
    assert nearest_neighbours(vectors, C, k=3)[0][0] == D
    top = nearest_neighbours(vectors, B, k=1)[0]
    assert top[0] == A and top[1] > 0.9
    again, _ = ppmi_svd_embeddings(ids, starts, VOCAB, dim=6, window=2, seed=0)
    assert np.array_equal(vectors, again)


# Token ids of a crafted training split: 2 "great" (pos, frequent), 3 "awful" (neg, frequent), 4 "the"
# (everywhere, leans pos a little), 5 "uwe" (only in neg, but 3 times: below the count threshold),
# 6 "film" (leans neg a little, frequent), 7 "brilliant" (pos, less frequent than great).
def crafted_counts() -> np.ndarray:
    occurrences = {  # token: (in neg, in pos)
        2: (5, 60), 3: (55, 4), 4: (300, 330), 5: (3, 0), 6: (200, 170), 7: (1, 25)}
    ids, classes = [], []
    for token, per_class in occurrences.items():
        for c, n in enumerate(per_class):
            ids += [token] * n
            classes += [c] * n
    counts = class_counts(np.array(ids), np.array(classes), vocab_size=8, n_classes=2)
    assert counts.shape == (2, 8) and counts[1, 2] == 60 and counts[0, 5] == 3
    return counts


def test_probe_selection_picks_each_class_cues_not_rare_or_common_tokens():
    counts = crafted_counts()
    odds, z = log_odds(counts)
    assert np.allclose(odds[0], -odds[1])  # two classes: one's "rest" is the other
    assert odds[1, 2] > np.log(2) > odds[1, 4] > 0
    picks = cue_probes(odds, z, counts.sum(0), least=10, per_class=2)
    assert picks == [(3, 0), (6, 0), (2, 1), (7, 1)]  # "the" never; "uwe" too rare; "film" fills neg's second place
    assert cue_probes(odds, z, counts.sum(0), least=10, per_class=1) == [(3, 0), (2, 1)]
    assert min_count(5_000_000) == 20 and min_count(4_000) == 2


def test_probe_words_are_looked_up_in_word_start_form_first():
    vocab = {"<pad>": 0, "<unk>": 1, "▁great": 2, "great": 3, "film": 4, "▁bad": 5}
    ids, unknown = lookup_probes(vocab, ["great", "Film", "nope", "<unk>", "▁bad", "GREAT"])
    assert ids == [2, 4, 5] and unknown == ["nope", "<unk>"]


def test_neighbour_statistics():
    vectors = np.array([[0, 0], [5, 5], [1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)  # (V, 2)
    found = neighbours(vectors, [2], k=2)
    assert [i for i, _ in found[2]] == [3, 4] and found[2][0][1] == pytest.approx(0.994, abs=1e-3)  # never <unk> (1)
    odds = np.array([[1, 1, 1, 1, -1, 1], [-1, -1, -1, -1, 1, -1]], dtype=float)  # token 4 is a cue of class 1
    assert same_class_share(found, {2: 0}, odds) == 0.5
    assert closest_opposite(found, {2: 0}, odds) == (2, 4, found[2][1][1])
    odds[:, 4] = [-0.1, 0.1]  # leans to class 1, but not twice the odds: a cue of no class
    assert same_class_share(found, {2: 0}, odds) == 0.5 and closest_opposite(found, {2: 0}, odds) is None


def test_one_hot_line_has_this_runs_numbers():
    cost = one_hot_cost(vocab_size=20_000, embedding_dim=64, hidden_size=64, directions=2)
    assert cost["one_hot_weights"] == 20_000 * 3 * 64 * 2 == 7_680_000
    assert cost["embedding_weights"] == 20_000 * 64 + 64 * 3 * 64 * 2 == 1_304_576
    assert cost["ratio"] == 5.89
    record = {"probes": [{"token": "great", "id": 2, "cue_of": "pos", "neighbours": {"pretrained": [["excellent", 0.81]]}}],
              "unknown_probes": [], "same_class_share": {"pretrained": 1.0}, "closest_opposite": {"pretrained": None},
              "projection": {"space": "pretrained", "tokens": 300, "figure": "figures/embedding_space.png"}, "one_hot": cost}
    text = "\n".join(section_markdown(record))
    assert "7,680,000" in text and "1,304,576" in text and "5.9x fewer" in text and "cosine 0" in text
    assert "great next to excellent, cosine 0.81" in text
    assert "| **great *(pos)*** | excellent (0.81) |" in text


@pytest.mark.parametrize("labels", [["neg", "pos"], ["bad", "meh", "good"]])
def test_projection_figure_for_two_and_more_classes(labels, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    xy, variance = projection(vectors)
    again, _ = projection(vectors)
    assert xy.shape == (40, 2) and np.array_equal(xy, again) and 0 < variance.sum() <= 1
    odds = rng.normal(size=(len(labels), 40))
    fig = fig_embedding_space(xy, [f"t{i}" for i in range(40)], odds, labels, "test")
    fig.savefig(tmp_path / "space.png")
    assert (tmp_path / "space.png").stat().st_size > 10_000
