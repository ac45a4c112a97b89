"""The baselines as a set (models/baselines.py, flows/baseline.py) and the ensemble (flows/ensemble.py), in process
on tiny data whose answer is known: NB-SVM's log-count ratios and probabilities, the ensemble's average and its
weights fitted on validation, the stages' files, `predict` for both, the params that configure them, and the
report's pieces (pairs, the members' disagreement)."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import yaml

import flows.common
from models.baselines import BASELINES, NBSVMClassifier, describe, interpolate, log_count_ratio, make_baseline
from reweigh.params import BaselineParams, NBSVMParams, Params, ParamsError, load_params, role

CUES = {"bad": ["awful", "dull"], "meh": ["okay", "average"], "good": ["great", "superb"], "odd": ["strange", "weird"]}
FILLER = "the a film movie plot story it was and of".split()


def corpus(labels: list[str], n: int, seed: int, cue_share: float = 0.3) -> tuple[list[str], np.ndarray]:
    """n texts per label: filler words, each word a cue of the text's label with probability cue_share."""
    rng = random.Random(seed)
    texts, y = [], []
    for i in range(n * len(labels)):
        c = i % len(labels)
        words = [rng.choice(CUES[labels[c]]) if rng.random() < cue_share else rng.choice(FILLER) for _ in range(12)]
        words[rng.randrange(12)] = rng.choice(CUES[labels[c]])  # at least one cue: separable
        texts.append(" ".join(words))
        y.append(c)
    return texts, np.array(y)


# ---------------------------------------------------------------- NB-SVM
def test_log_count_ratio_by_hand_and_its_sign_per_token():
    # 3 documents x 3 features, binary; rows 0, 1 positive. p = 1 + [2, 1, 0] = [3, 2, 1], q = 1 + [0, 1, 1] = [1, 2, 2].
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=float))
    r = log_count_ratio(X, np.array([True, True, False]), alpha=1.0)
    expected = np.log(np.array([3, 2, 1]) / 6) - np.log(np.array([1, 2, 2]) / 5)
    assert np.allclose(r, expected)
    assert r[0] > 0 > r[2], "only in positive documents: positive r; only in the others: negative"

    texts, y = corpus(["bad", "good"], 40, seed=0)
    pipe = make_baseline("nbsvm", NBSVMParams(), seed=0).fit(texts, y)
    vocab, clf = pipe.named_steps["counts"].vocabulary_, pipe.named_steps["nbsvm"]
    assert clf.r_.shape == (1, len(vocab)) and clf.coef_.shape == (1, len(vocab))  # two classes: one problem
    for word in CUES["good"]:
        assert clf.r_[0, vocab[word]] > 1, word  # class 1 (good) is the positive side
    for word in CUES["bad"]:
        assert clf.r_[0, vocab[word]] < -1, word
    assert abs(clf.r_[0, vocab["film"]]) < 0.5, "filler words carry no class"
    assert describe(pipe) == {"features": len(vocab), "parameters": 2 * len(vocab) + 1}


def test_nbsvm_is_perfect_on_a_separable_set_and_pickles():
    texts, y = corpus(["bad", "good"], 40, seed=1)
    test_texts, test_y = corpus(["bad", "good"], 20, seed=2)
    pipe = make_baseline("nbsvm", NBSVMParams(), seed=0).fit(texts, y)
    probs = pipe.predict_proba(test_texts)
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == test_y).mean() == 1.0 and (pipe.predict(test_texts) == test_y).all()
    again = pickle.loads(pickle.dumps(pipe))
    assert np.array_equal(again.predict_proba(test_texts), probs)
    # the same data and seed, the same model (liblinear is seeded)
    assert np.array_equal(make_baseline("nbsvm", NBSVMParams(), seed=0).fit(texts, y).predict_proba(test_texts), probs)


@pytest.mark.parametrize("labels", [["bad", "meh", "good"], ["bad", "meh", "good", "odd"]])
def test_nbsvm_multi_class_is_one_vs_rest_with_normalised_probabilities(labels):
    texts, y = corpus(labels, 30, seed=3)
    test_texts, test_y = corpus(labels, 10, seed=4)
    pipe = make_baseline("nbsvm", NBSVMParams(), seed=0).fit(texts, y)
    vocab, clf = pipe.named_steps["counts"].vocabulary_, pipe.named_steps["nbsvm"]
    assert clf.r_.shape == (len(labels), len(vocab)) and clf.intercept_.shape == (len(labels),)
    for k, label in enumerate(labels):  # each class's own r: its cues positive there, negative in every other row
        for word in CUES[label]:
            assert clf.r_[k, vocab[word]] > 0 and all(clf.r_[j, vocab[word]] < 0 for j in range(len(labels)) if j != k)
    probs = pipe.predict_proba(test_texts)
    assert probs.shape == (len(test_y), len(labels)) and np.allclose(probs.sum(1), 1) and (probs >= 0).all()
    assert (probs.argmax(1) == test_y).mean() == 1.0


def test_interpolation_beta():
    w = np.array([2.0, -1.0, 0.0, 3.0])
    assert np.array_equal(interpolate(w, 1.0), w)
    assert np.allclose(interpolate(w, 0.25), 0.75 * 1.5 + 0.25 * w)  # mean |w| = 1.5
    X = sp.csr_matrix(np.eye(4))
    y = np.array([0, 1, 0, 1])
    full, shrunk = NBSVMClassifier(beta=1.0).fit(X, y), NBSVMClassifier(beta=0.5).fit(X, y)
    assert np.array_equal(full.r_, shrunk.r_) and np.allclose(shrunk.coef_, 0.5 * np.abs(full.coef_).mean() + 0.5 * full.coef_)
    with pytest.raises(ValueError, match="at least two classes"):
        NBSVMClassifier().fit(X, np.zeros(4))


# ---------------------------------------------------------------- the ensemble's arithmetic
def test_uniform_average_is_the_members_mean_and_val_weights_lie_on_the_simplex():
    from flows.ensemble import average, fit_weights, log_loss

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8  # (N, C): right, confident
    noise = rng.dirichlet(np.ones(3), 200)  # (N, C): random
    members = np.stack([good, noise, rng.dirichlet(np.ones(3), 200)])  # (M, N, C)
    mean = average(members, np.full(3, 1 / 3))
    assert np.allclose(mean, members.mean(0)) and np.allclose(mean.sum(1), 1)
    w = fit_weights(members, y)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1, abs=1e-5)
    assert w[0] > 0.9, "the informative member takes the weight"
    assert log_loss(average(members, w), y) <= log_loss(mean, y)
    # two equally good members that err on different rows: a mix beats either alone
    half = np.where(np.arange(200)[:, None] % 2 == 0, good, np.roll(good, 1, axis=1))
    other = np.where(np.arange(200)[:, None] % 2 == 1, good, np.roll(good, 1, axis=1))
    w = fit_weights(np.stack([half, other]), y)
    assert w == pytest.approx([0.5, 0.5], abs=1e-3)


def test_disagreement_of_members_by_hand():
    from flows.report.ensemble import disagreement

    y = np.array([0, 1, 1, 0])
    decided = {"a": np.array([0, 1, 0, 1]), "b": np.array([0, 0, 1, 1]), "c": np.array([0, 1, 1, 0])}
    out = {(a, b): (one, both) for a, b, one, both in disagreement(y, decided, ["a", "b", "c"])}
    # a right on rows 0, 1; b on 0, 2; c on all. a·b: rows 1, 2 differ, row 3 both wrong.
    assert out == {("a", "b"): (0.5, 0.25), ("a", "c"): (0.5, 0.0), ("b", "c"): (0.5, 0.0)}


# ---------------------------------------------------------------- params
def _load(tmp_path, update: dict) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(update))
    return load_params(path)


@pytest.mark.parametrize(("update", "named"), [
    ({"baseline": {"models": ["tfidf_lr", "svm"]}}, "baseline.models: Value error, unknown baseline(s) 'svm': choose from tfidf_lr, nbsvm"),
    ({"baseline": {"models": ["gru"]}}, "neural models go in train.models"),
    ({"baseline": {"models": ["nbsvm", "nbsvm"]}}, "named twice: nbsvm"),
    ({"baseline": {"models": []}}, "baseline.models"),
    ({"baseline": {"ngram_max": 2, "C": 4.0}}, "C, ngram_max: the TF-IDF baseline's knobs live under baseline.tfidf_lr"),
    ({"baseline": {"nbsvm": {"beta": 0}}}, "baseline.nbsvm.beta"),
    ({"baseline": {"nbsvm": {"alpah": 1}}}, "baseline.nbsvm.alpah: unknown key"),
    ({"train": {"models": ["gru", "nbsvm"]}}, "baselines have their own list, baseline.models"),
    ({"ensemble": {"members": ["gru", "lstm"]}}, "ensemble.members: Value error, unknown model(s) 'lstm'"),
    ({"ensemble": {"members": ["gru"]}}, "one member (gru) is no ensemble"),
    ({"ensemble": {"members": "some"}}, "ensemble.members"),
    ({"ensemble": {"members": ["gru", "cnn"]}}, "ensemble.members names cnn, which this run does not train"),
    ({"ensemble": {"weights": "learned"}}, "ensemble.weights"),
])
def test_bad_baseline_and_ensemble_params_are_params_errors_naming_the_key(tmp_path, update, named):
    with pytest.raises(ParamsError) as err:
        _load(tmp_path, update)
    assert named in str(err.value)


def test_the_model_set_and_the_ensemble_members(tmp_path):
    p = Params()
    assert p.baseline.models == ["tfidf_lr", "nbsvm"] and p.ensemble.members == "all" and p.ensemble.weights == "uniform"
    assert p.model_set() == ("gru", "gru_attention", "tfidf_lr", "nbsvm", "ensemble")
    assert set(BaselineParams.model_fields) - {"models"} == set(BASELINES)  # a params section per baseline
    listed = _load(tmp_path, {"ensemble": {"members": ["nbsvm", "gru"]}})
    assert listed.ensemble_members() == ["gru", "nbsvm"]  # in the report's order
    for off in ({"enabled": False}, {"members": []}):
        q = _load(tmp_path, {"ensemble": off})
        assert q.ensemble_members() == [] and q.model_set() == ("gru", "gru_attention", "tfidf_lr", "nbsvm")
    assert [role(m) for m in ("cnn", "nbsvm", "ensemble", "baseline", "models")] == ["neural", "baseline", "ensemble", "unknown", "unknown"]
    defaults = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert defaults.baseline.tfidf_lr.model_dump() == {"ngram_max": 2, "min_df": 2, "max_features": 200000, "C": 4.0}
    assert defaults.baseline.nbsvm.model_dump() == {"ngram_max": 2, "min_df": 1, "max_features": 0, "alpha": 1.0, "C": 1.0, "beta": 1.0}


def test_pairs_cover_every_baseline_and_the_ensemble_against_each_member():
    from flows.report.scores import PAIRS, pairs

    assert pairs(["gru", "cnn"], ["tfidf_lr", "nbsvm"], ["cnn", "nbsvm"]) == [
        ("gru", "tfidf_lr"), ("gru", "nbsvm"), ("cnn", "tfidf_lr"), ("cnn", "nbsvm"), ("nbsvm", "tfidf_lr"), ("cnn", "gru"),
        ("ensemble", "cnn"), ("ensemble", "nbsvm")]
    assert len(PAIRS) == 4 + 1 + 1 + 4


# ---------------------------------------------------------------- the stages, in process
@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A project folder with data/clean.parquet and data/dataset.json of a 3-class corpus, and its params.yaml."""
    labels = ["bad", "meh", "good"]
    rows = []
    for split, n, seed in (("train", 30, 5), ("val", 8, 6), ("test", 10, 7)):
        texts, y = corpus(labels, n, seed, cue_share=0.15)
        rows += [{"id": f"{split}-{i}", "text": t, "label": labels[c], "split": split} for i, (t, c) in enumerate(zip(texts, y))]
    (tmp_path / "data").mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "clean.parquet")
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"name": "cues", "labels": labels}))
    params = tmp_path / "params.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flows.common, "PARAMS_FILE", params)

    def set_params(update: dict) -> None:
        params.write_text(yaml.safe_dump({"train": {"models": ["gru"]}, **update}))
    set_params({"ensemble": {"members": ["tfidf_lr", "nbsvm"]}})
    return tmp_path, labels, set_params


def test_baseline_and_ensemble_stages_write_their_files_and_predict_reads_them(workspace):
    from flows.baseline import baseline_flow
    from flows.ensemble import ensemble_flow
    from flows.predict import predict, predict_proba

    root, labels, set_params = workspace
    for name in ("tfidf_lr", "nbsvm"):
        baseline_flow.fn(name)  # the flow's body, without starting Prefect
        summary = json.loads((root / "reports" / "train" / f"{name}.json").read_text())
        assert summary["model"] == name and summary["features"] > 0 and summary["parameters"] > 0 and summary["epochs"] == 0
        preds = pl.read_parquet(root / "data" / "predictions" / f"{name}.parquet")
        assert preds.columns == ["id", "split", "label_id", "prob_0", "prob_1", "prob_2"] and preds.height == 3 * (8 + 10)
        saved = pickle.loads((root / "artifacts" / f"{name}.pkl").read_bytes())
        assert saved["model"] == name and saved["labels"] == labels

    ensemble_flow.fn()
    table = pl.read_parquet(root / "data" / "predictions" / "ensemble.parquet")
    members = [pl.read_parquet(root / "data" / "predictions" / f"{m}.parquet").sort("split", "id") for m in ("tfidf_lr", "nbsvm")]
    table = table.sort("split", "id")
    probs = [f"prob_{c}" for c in range(3)]
    assert table.select("id", "split", "label_id").equals(members[0].select("id", "split", "label_id"))
    assert np.allclose(table.select(probs).to_numpy(), (members[0].select(probs).to_numpy() + members[1].select(probs).to_numpy()) / 2)
    assert np.allclose(table.select(probs).to_numpy().sum(1), 1)
    spec = json.loads((root / "artifacts" / "ensemble.json").read_text())
    assert spec == {"model": "ensemble", "enabled": True, "members": ["tfidf_lr", "nbsvm"], "weights": [0.5, 0.5], "labels": labels}
    summary = json.loads((root / "reports" / "ensemble.json").read_text())
    assert summary["weighting"] == "uniform" and summary["val_rows"] == 24 and summary["parameters"] > 0

    # predict: each baseline from its pickle; the ensemble runs both and averages, as the stage did
    test = pl.read_parquet(root / "data" / "clean.parquet").filter(pl.col("split") == "test").sort("id")
    mixed, names = predict_proba(test["text"].to_list(), "ensemble", root / "artifacts")
    assert names == labels and np.allclose(mixed, table.filter(pl.col("split") == "test").select(probs).to_numpy(), atol=1e-9)
    row = predict(["great superb film"], "nbsvm", artifacts=root / "artifacts")[0]
    assert row["label"] == "good" and sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert predict(["awful dull awful"], "ensemble", artifacts=root / "artifacts")[0]["label"] == "bad"
    # the retrain judge scores every model found in the artifacts folder, the ensemble from its members' probabilities
    from flows.retrain.judge import score

    scores = score(root / "artifacts", test["text"].to_list(), test["label"].to_list(), chunk=7)
    assert list(scores) == ["tfidf_lr", "nbsvm", "ensemble"]
    truth = np.array([labels.index(label) for label in test["label"]])
    assert scores["ensemble"]["accuracy"] == pytest.approx(float((mixed.argmax(1) == truth).mean()))

    set_params({"ensemble": {"members": ["tfidf_lr", "nbsvm"], "weights": "val"}})
    ensemble_flow.fn()
    summary = json.loads((root / "reports" / "ensemble.json").read_text())
    assert set(summary["weights"]) == {"tfidf_lr", "nbsvm"} and sum(summary["weights"].values()) == pytest.approx(1, abs=1e-5)
    assert summary["val_log_loss"] <= summary["val_log_loss_uniform"] + 1e-9

    set_params({"ensemble": {"enabled": False}})
    ensemble_flow.fn()
    assert json.loads((root / "artifacts" / "ensemble.json").read_text())["enabled"] is False
    assert pl.read_parquet(root / "data" / "predictions" / "ensemble.parquet").height == 0
    with pytest.raises(FileNotFoundError, match="this run has no ensemble"):
        predict(["great"], "ensemble", artifacts=root / "artifacts")


def test_the_retrain_judge_reads_every_model_a_lock_ran():
    from flows.retrain.judge import ARTIFACT_FILES, best_neural, lock_artifact_files

    lock = {"stages": {"train@gru": {}, "train@cnn": {}, "baseline@nbsvm": {}, "ensemble": {}, "report": {}}}
    assert lock_artifact_files(lock) == ("artifacts/tokenizer.json", "artifacts/gru.pt", "artifacts/cnn.pt",
                                         "artifacts/nbsvm.pkl", "artifacts/ensemble.json")
    old = {"stages": {"train@gru": {}, "baseline": {}}}  # before baseline.models: its single baseline is not scored
    assert lock_artifact_files(old) == ("artifacts/tokenizer.json", "artifacts/gru.pt")
    assert "artifacts/tfidf_lr.pkl" in ARTIFACT_FILES and "artifacts/ensemble.json" in ARTIFACT_FILES
    scores = {"gru": {"macro_f1": 0.8}, "nbsvm": {"macro_f1": 0.9}, "ensemble": {"macro_f1": 0.95}}
    assert best_neural(scores, "macro_f1") == ("gru", 0.8), "baselines and the ensemble never decide a promotion"


def test_the_ensemble_section_says_how_noisy_fitted_weights_are():
    from flows.report.ensemble import markdown

    y = np.array([0, 1, 1, 0])
    decided = {"gru": np.array([0, 1, 0, 0]), "nbsvm": np.array([0, 1, 1, 1]), "ensemble": y}
    metrics = {m: {"accuracy": float((d == y).mean()), "val_accuracy": 0.75} for m, d in decided.items()}
    same = {"accuracy_diff": 0.25, "accuracy_diff_ci_low": 0.0, "accuracy_diff_ci_high": 0.5, "mcnemar_p": 1.0}
    comparisons = {"ensemble_vs_gru": same, "ensemble_vs_nbsvm": same}
    titles = {"gru": "GRU", "nbsvm": "NB-SVM", "ensemble": "Ensemble"}
    summary = {"enabled": True, "members": ["gru", "nbsvm"], "weights": {"gru": 0.3, "nbsvm": 0.7}, "weighting": "val",
               "val_rows": 400, "val_log_loss": 0.31, "val_log_loss_uniform": 0.35}
    md = "\n".join(markdown(summary, metrics, comparisons, y, decided, titles, 0.05))
    assert "weights fitted on the validation split" in md and "Those are 400 rows, on which one review moves validation accuracy by 0.25 points" in md
    assert "| NB-SVM | 0.700 | 75.00% | 75.00% | +25.00 points" in md and "| GRU · NB-SVM | 50.00% | 0.00% |" in md
    summary["weighting"] = "uniform"
    assert "equal weights: the plain mean" in "\n".join(markdown(summary, metrics, comparisons, y, decided, titles, 0.05))
    assert markdown({"enabled": False}, metrics, comparisons, y, decided, titles, 0.05) == []
