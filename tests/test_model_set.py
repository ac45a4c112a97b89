"""params.yaml's train.models and baseline.models: which models a run trains (one train@<name> / baseline@<name>
stage each), averages (the ensemble) and compares.

Checked: the names are validated; the train and baseline stages never depend on the lists (adding a model or a
baseline trains only it, then the ensemble and the report); the report covers every model of the set in every
table, figure and verdict, CNN, Transformer, both baselines and the ensemble included.
"""
from __future__ import annotations

import json
import sys

import polars as pl
import pytest
import torch
import yaml

from conftest import ROOT, make_project
from reweigh.params import MODEL_NAMES, ModelParams, Params, ParamsError, TrainParams, load_params

FOUR = ["gru", "gru_attention", "cnn", "transformer"]
TITLES = {"gru": "GRU", "gru_attention": "GRU + attention", "cnn": "CNN", "transformer": "Transformer",
          "tfidf_lr": "TF-IDF + LogReg", "nbsvm": "NB-SVM", "ensemble": "Ensemble"}
BASELINES = ["tfidf_lr", "nbsvm"]
SMALL_NEW = {"cnn": {"embedding_dim": 16, "widths": [2, 3], "filters": 8},  # embedding_dim = pretrain.dim (16)
             "transformer": {"embedding_dim": 16, "heads": 2, "ff": 32, "layers": 2}}


def _load(tmp_path, update: dict) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(update))
    return load_params(path)


def test_default_set_is_the_two_grus_and_every_registered_model_has_a_section():
    from models.registry import MODELS

    assert Params().train.models == list(MODEL_NAMES) == ["gru", "gru_attention"]
    assert set(MODELS) == set(ModelParams.model_fields)
    assert load_params(ROOT / "params.yaml").train.models == ["gru", "gru_attention"]


@pytest.mark.parametrize(("models", "named"), [(["gru", "lstm"], "'lstm'"), (["baseline"], "baselines have their own list"),
                                               ([], "at least 1"), (["cnn", "cnn"], "named twice: cnn")])
def test_a_bad_model_set_is_a_params_error_naming_train_models(tmp_path, models, named):
    with pytest.raises(ParamsError) as err:
        _load(tmp_path, {"train": {"models": models}})
    assert "train.models" in str(err.value) and named in str(err.value)


def test_transformer_positions_must_cover_tokenize_max_length(tmp_path):
    with pytest.raises(ParamsError, match="model.transformer.max_len 128 is below tokenize.max_length 400"):
        _load(tmp_path, {"train": {"models": ["transformer"]}, "tokenize": {"max_length": 400}, "model": {"transformer": {"max_len": 128}}})
    assert _load(tmp_path, {"tokenize": {"max_length": 400}, "model": {"transformer": {"max_len": 128}}})  # not trained: fine


def test_train_stages_read_every_train_key_but_the_model_set():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["foreach"] == "${train.models}"
    train_keys = {p for p in stages["train"]["do"]["params"] if str(p).startswith("train")}
    assert train_keys == {f"train.{k}" for k in TrainParams.model_fields if k != "models"}
    assert "train.models" in stages["report"]["params"]
    assert not any(str(d).startswith("artifacts/gru") for d in stages["report"]["deps"])
    # the baselines likewise: one stage per name, reading its own section, never the list
    assert stages["baseline"]["foreach"] == "${baseline.models}"
    assert stages["baseline"]["do"]["params"] == ["seed", "baseline.${item}", "train.label_limit", "clean.steps"]
    assert {"train.models", "baseline.models", "ensemble"} <= set(stages["ensemble"]["params"])
    assert {"train.models", "baseline.models", "ensemble"} <= set(stages["report"]["params"])
    # the ensemble follows its members through their summaries (which record their predictions' digest)
    assert "reports/train" in stages["ensemble"]["deps"] and "reports/ensemble.json" in stages["report"]["deps"]


def test_shape_tables_show_convolutions_pooling_and_transformer_blocks():
    from flows.report.models import legend, trace_shapes
    from models.registry import build_model

    ids = torch.randint(2, 50, (3, 7))
    lengths = torch.tensor([7, 4, 1])
    cnn = build_model("cnn", 50, 3, embedding_dim=8, widths=(2, 3), filters=5).eval()
    rows = trace_shapes(cnn, ids, lengths, "cnn")
    steps = [r[0] for r in rows]
    assert steps == ["input ids", "input lengths", "embedding", "Conv1D K=2 + ReLU", "Conv1D K=3 + ReLU",
                     "max over time, K=2", "max over time, K=3", "concatenate (flatten)", "dropout", "head"]
    shape = {r[0]: (r[2], r[3]) for r in rows}
    assert shape["Conv1D K=3 + ReLU"] == ("(3, 5, 5)", "(B, F, T-3+1)") and shape["max over time, K=2"] == ("(3, 5)", "(B, F)")
    assert shape["concatenate (flatten)"] == ("(3, 10)", "(B, nK·F)") and shape["head"] == ("(3, 3)", "(B, C)")
    assert "pool" not in vars(cnn), "the recording wrapper is gone after the trace"
    assert "K in [2, 3], nK=2, F=5" in legend("cnn", cnn.cfg, ids, 3)

    tf = build_model("transformer", 50, 3, embedding_dim=8, heads=2, ff=16, layers=2).eval()
    rows = trace_shapes(tf, ids, lengths, "transformer")
    shape = {r[0]: (r[2], r[3]) for r in rows}
    for b in (1, 2):
        assert shape[f"block {b}: self-attention"] == ("(3, 7, 8), (3, 2, 7, 7)", "(B, T, D), (B, nh, T, T)")
        assert shape[f"block {b}: MLP"] == ("(3, 7, 8)", "(B, T, D)")
    assert shape["mean pooling"] == ("(3, 8), (3, 7)", "(B, D), (B, T)") and shape["head"] == ("(3, 3)", "(B, C)")
    assert "2 blocks, nh=2, hd=4" in legend("transformer", tf.cfg, ids, 3)


def test_transformer_weights_are_a_distribution_over_real_tokens():
    from flows.predict import forward_with_weights
    from models.registry import build_model

    ids, lengths = torch.randint(2, 50, (2, 6)), torch.tensor([6, 3])
    for pooling in ("mean", "attention"):
        tf = build_model("transformer", 50, 2, embedding_dim=8, heads=2, ff=16, layers=1, pooling=pooling).eval()
        with torch.no_grad():
            logits, w = forward_with_weights(tf, "transformer", ids, lengths)
        assert logits.shape == (2, 2) and w.shape == (2, 6)
        assert torch.allclose(w.sum(1), torch.ones(2), atol=1e-5) and float(w[1, 3:].abs().sum()) == 0


def _stale(project) -> dict:
    status = json.loads(project.dvc("status", "--json").stdout)
    assert status.pop("sources", None) == ["always changed"], status
    return status


def _ran(result) -> set[str]:
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")}
    assert "sources" in ran, result.stdout[-2000:]
    return ran - {"sources"}


@pytest.mark.slow
def test_four_model_report_and_adding_a_model_trains_only_it(tmp_path, imdb_archive):
    three = FOUR[:3]
    project = make_project(tmp_path, {"dataset": {"options": {"archive": str(imdb_archive)}}, "train": {"models": three},
                                      "baseline": {"models": ["tfidf_lr"]}, "model": SMALL_NEW})
    project.dvc("repro")
    assert _stale(project) == {}
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]
    assert {s for s in lock if s.startswith(("train@", "baseline@"))} == {*(f"train@{m}" for m in three), "baseline@tfidf_lr"}
    assert all("train.models" not in lock[f"train@{m}"]["params"]["params.yaml"] for m in three)
    assert set(lock["baseline@tfidf_lr"]["params"]["params.yaml"]) == {"seed", "baseline.tfidf_lr", "train.label_limit", "clean.steps"}

    # the transformer and NB-SVM join: only they, the ensemble (which averages every model) and the report rerun
    project.set_params({"train": {"models": FOUR}, "baseline": {"models": BASELINES}})
    assert set(_stale(project)) == {"train@transformer", "baseline@nbsvm", "ensemble", "report"}
    assert _ran(project.dvc("repro")) == {"train@transformer", "baseline@nbsvm", "ensemble", "report"}
    assert _stale(project) == {}

    reports = project.path / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    comparisons = metrics.pop("comparisons")
    assert list(metrics) == [*FOUR, *BASELINES, "ensemble"]
    assert set(comparisons) == {f"{m}_vs_{b}" for m in FOUR for b in BASELINES} | {"nbsvm_vs_tfidf_lr"} | {
        f"{b}_vs_{a}" for i, a in enumerate(FOUR) for b in FOUR[i + 1:]} | {f"ensemble_vs_{m}" for m in [*FOUR, *BASELINES]}
    ensemble = json.loads((reports / "ensemble.json").read_text())
    assert ensemble["members"] == [*FOUR, *BASELINES] and ensemble["weights"] == {m: pytest.approx(1 / 6, abs=1e-6) for m in ensemble["members"]}
    for m in FOUR:
        assert metrics[m]["parameters"] > 0 and set(metrics[m]["thresholds"]) and metrics[m]["per_class"]
        assert (project.path / "artifacts" / f"{m}.pt").exists()
        for kind in ("confusion", "pr", "pr_per_class"):
            assert (reports / "plots" / kind / f"{m}.csv").exists(), (kind, m)
        live = json.loads((project.path / "dvclive" / m / "metrics.json").read_text())  # DVCLive: the last epoch
        assert live["step"] == json.loads((reports / "train" / f"{m}.json").read_text())["epochs"] == len(pl.read_csv(project.path / "dvclive" / m / "plots" / "metrics" / "val_accuracy.tsv", separator="\t"))
        assert (reports / "figures" / f"confusion_{m}.png").exists()

    for m in [*BASELINES, "ensemble"]:
        assert metrics[m]["parameters"] > 0 and set(metrics[m]["thresholds"]) and (reports / "plots" / "pr" / f"{m}.csv").exists()
        assert (reports / "figures" / f"confusion_{m}.png").exists()

    report = (reports / "report.md").read_text()
    assert "| metric | " + " | ".join(TITLES[m] for m in [*FOUR, *BASELINES, "ensemble"]) + " |" in report
    verdict = report.split("## Verdict")[1].split("## Metrics")[0]
    bar = max(BASELINES, key=lambda b: metrics[b]["val_accuracy"])  # the strongest baseline, chosen on validation
    assert f"The bar is **{TITLES[bar]}, the strongest baseline**" in verdict and "a win against a weak bar is no win" in verdict
    assert "- Ensemble (the mean of 6 models) " in verdict
    ensemble_section = report.split("### The ensemble")[1].split("### How each model started")[0]
    assert ensemble_section.count(" · ") == 15, "every pair of the 6 members: the share only one of the two gets right"
    for m in FOUR:
        assert f"- {TITLES[m]} " in verdict and f" the bar, {TITLES[bar]}: " in verdict
        assert f"| {TITLES[m]} − TF-IDF + LogReg |" in report and f"| {TITLES[m]} − NB-SVM |" in report  # the significance table
        assert f"| Ensemble − {TITLES[m]} |" in report
        assert f"**{TITLES[m]}**: started from" in report  # how it started and stopped
        assert f"![{TITLES[m]} confusion](figures/confusion_{m}.png)" in report
        assert f"**{TITLES[m]}** (B=" in report  # its tensor-shape table
    assert "- Transformer against CNN:" in verdict and "| Transformer − GRU |" in report
    per_class = report.split("## Per class")[1].split("## Confusion matrices")[0]
    thresholds = report.split("## Precision-recall")[1].split("## Training curves")[0]
    assert all(TITLES[m] in per_class and TITLES[m] in thresholds for m in FOUR)
    assert "| probe | pretrained | gru | gru_attention | cnn | transformer |" in report
    assert "| Conv1D K=2 + ReLU | Conv1d |" in report and "| max over time, K=3 | max |" in report
    assert "| concatenate (flatten) | cat |" in report and "| block 2: self-attention | SelfAttention |" in report
    attention = report.split("## Where attention looked")[1].split("## Tensor shapes")[0]
    assert "GRU + attention predicted" in attention and "Transformer predicted" in attention and "![attention](figures/attention_1.png)" in attention
    space = json.loads((reports / "embeddings.json").read_text())
    assert all(set(p["neighbours"]) == {"pretrained", *FOUR} for p in space["probes"])

    predicted = project.run(sys.executable, "-m", "flows.predict", "--model", "transformer", "--json", "a wonderful superb film")
    row = json.loads(predicted.stdout)
    assert row["label"] in ("neg", "pos") and row["top_tokens"]
