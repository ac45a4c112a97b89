"""Scaling laws (`reweigh scaling`, flows/scaling/): the power-law fit, the grid, train.label_limit, and a queue
of real DVC experiments on a tiny project, killed mid-queue and started again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from conftest import make_project
from flows.scaling.fit import crossover, fit_power_law, measured_crossover
from flows.scaling.grid import experiments, finished, label_sizes, smallest_size, width_overrides
from flows.scaling.report import analyse
from flows.outputs import limit_labels
from reweigh.params import Params, ParamsError


def test_the_fit_recovers_a_known_power_law_from_noisy_points_and_its_intervals_hold_the_truth():
    a, b, c = 3.0, 0.45, 0.07
    n = np.geomspace(200, 50_000, 7)
    rng = np.random.default_rng(3)
    sd = 0.003
    err = a * n ** -b + c + rng.normal(0, sd, len(n))
    law = fit_power_law(n, err, err - 1.96 * sd, err + 1.96 * sd, boot=200, seed=1)
    assert law.b_ci[0] <= b <= law.b_ci[1] and law.c_ci[0] <= c <= law.c_ci[1]
    assert abs(law.b - b) < 0.1 and abs(law.c - c) < 0.01
    goal = a * 20_000 ** -b + c  # the labels for an error the true curve reaches at 20k
    assert 10_000 < law.size_for(goal) < 40_000
    assert law.size_for(c * 0.5) is None  # below the floor: never
    assert fit_power_law(n[:2], err[:2]) is None  # three parameters need three sizes


def test_crossover_is_where_one_curve_goes_below_the_other_for_good():
    steep = fit_power_law([100, 1000, 10_000, 100_000], [2 * x ** -0.5 + 0.02 for x in (100, 1000, 10_000, 100_000)], boot=0)
    flat = fit_power_law([100, 1000, 10_000, 100_000], [0.2 * x ** -0.2 + 0.05 for x in (100, 1000, 10_000, 100_000)], boot=0)
    at = crossover(steep, flat, 100, 200_000)
    assert at is not None and abs(steep(at) - flat(at)) < 0.002 and steep(at * 1.5) < flat(at * 1.5)
    assert crossover(flat, steep, 100, 200_000) is None
    assert measured_crossover([1, 2, 3, 4], [0.3, 0.1, 0.2, 0.1], [0.2, 0.2, 0.15, 0.15]) == 4
    assert measured_crossover([1, 2, 3], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]) == 1


def test_analysis_names_the_crossover_and_flags_long_extrapolations():
    rows = []
    for n in (250, 1000, 4000, 16_000):
        for model, (a, b, c) in {"gru": (4.0, 0.5, 0.05), "nbsvm": (0.6, 0.25, 0.07)}.items():
            e = a * n ** -b + c
            rows.append({"kind": "labels", "value": n, "labels": n, "model": model, "error": e,
                         "error_low": e - 0.004, "error_high": e + 0.004, "parameters": 1, "train_seconds": n / 100})
    out = analyse(rows, ["gru"], ["nbsvm"], [0.9, 0.5], boot=20)
    assert out["crossover"]["neural"] == "gru" and out["crossover"]["linear"] == "nbsvm"
    assert out["crossover"]["measured"] == 1000  # gru 0.303 > nbsvm 0.221 at 250; below from 1000 on
    assert 250 < out["crossover"]["fitted"] < 1000
    halved = [need for need in out["needs"] if need["fraction"] == 0.5]
    assert all(need["labels"] is None or need["flag"] for need in halved)  # 50% less error: beyond reach or flagged


def test_sizes_are_geometric_from_the_smallest_that_keeps_every_class_to_all():
    sizes = label_sizes(25_000, 4, 250, 6)
    assert sizes[0] == 250 and sizes[-1] == 25_000 and len(sizes) == 6
    assert np.allclose(np.diff(np.log(sizes)), np.log(100) / 5, atol=0.01)  # evenly spaced on a log scale
    assert label_sizes(300, 4, 250, 6) == [300]  # too short a range for a curve
    assert label_sizes(1000, 300, 10, 6)[0] == 300
    counts = pl.DataFrame({"split": ["train", "train", "val", "val"], "label_id": [0, 1, 0, 1], "len": [900, 90, 100, 10]})
    n = smallest_size(counts)
    frame = pl.DataFrame({"id": range(1100), "split": ["train"] * 990 + ["val"] * 110,
                          "label_id": [0] * 900 + [1] * 90 + [0] * 100 + [1] * 10})
    kept = limit_labels(frame, n, 0)
    assert kept.filter(pl.col("split") == "val")["label_id"].n_unique() == 2
    with pytest.raises(ParamsError, match="train.label_limit=40 keeps no val row"):
        limit_labels(frame, 40, 0)


def test_label_limit_keeps_the_same_rows_whatever_the_order_and_leaves_test_alone():
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"id": range(3000), "split": rng.choice(["train", "val", "test"], 3000, p=[0.6, 0.1, 0.3]),
                          "label_id": rng.integers(0, 3, 3000)})
    kept = limit_labels(frame, 300, 7)
    shuffled = limit_labels(frame.sample(fraction=1.0, shuffle=True, seed=1), 300, 7)
    assert sorted(kept["id"]) == sorted(shuffled["id"])
    labelled = kept.filter(pl.col("split") != "test")
    assert abs(labelled.height - 300) <= 6  # each class and split rounded
    share = lambda df: df.filter(pl.col("split") == "val").height / df.height  # noqa: E731
    assert abs(share(labelled) - share(frame.filter(pl.col("split") != "test"))) < 0.02
    assert kept.filter(pl.col("split") == "test").equals(frame.filter(pl.col("split") == "test"))
    assert limit_labels(frame, 0, 7).equals(frame)


def test_width_multipliers_scale_every_model_and_the_pretraining_it_starts_from():
    p = Params.model_validate({"train": {"models": ["gru", "gru_attention", "cnn", "transformer"]},
                               "pretrain": {"dim": 64, "hidden_size": 64},
                               "model": {m: {"embedding_dim": 64} for m in ("gru", "gru_attention", "cnn", "transformer")}
                               | {"gru": {"embedding_dim": 64, "hidden_size": 64}, "gru_attention": {"embedding_dim": 64, "hidden_size": 64}}})
    over = width_overrides(p, 2)
    assert over["model.gru.hidden_size"] == 2 * p.model.gru.hidden_size
    assert over["model.cnn.filters"] == 2 * p.model.cnn.filters and over["model.transformer.ff"] == 2 * p.model.transformer.ff
    assert over["pretrain.dim"] == over["model.gru.embedding_dim"] == over["model.transformer.embedding_dim"]
    assert over["pretrain.hidden_size"] == over["model.gru_attention.hidden_size"]


def _exp_names(project) -> dict[str, str]:
    """Each experiment's state, read as `reweigh scaling` reads it: `dvc exp show`, tried again when it fails
    (just after a killed worker, DVC's cleanup can remove a run file while `exp show` reads it)."""
    return {name: e["state"] for name, e in experiments(project.path).items()}


@pytest.mark.slow
def test_scaling_queues_real_dvc_experiments_resumes_after_a_kill_and_explains_the_curves(tmp_path, imdb_archive):
    project = make_project(tmp_path, {"dataset": {"options": {"archive": str(imdb_archive)}},
                                      "train": {"models": ["gru"]}, "baseline": {"models": ["nbsvm"]},
                                      "scaling": {"min_labels": 20}})
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "trained")
    cmd = [sys.executable, "-m", "reweigh.cli", "scaling", "--quick"]

    # started, then killed (the command and the queue's worker) once the first point has run
    proc = subprocess.Popen(cmd, cwd=project.path, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not finished(project.path):  # git refs: `exp show` can hang beside a worker
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    project.dvc("queue", "stop", "--kill", check=False)
    first = {n for n, s in _exp_names(project).items() if s == "success"}
    assert first, "no point finished before the kill"

    out = project.run(*cmd, timeout=900).stdout
    names = _exp_names(project)
    assert len(names) == 2 and set(names.values()) == {"success"}, names
    for name in first:
        assert f"{name}: done, kept" in out  # only the missing point ran again

    result = json.loads((project.path / "reports" / "scaling.json").read_text())
    sizes = sorted({r["labels"] for r in result["points"]})
    assert len(sizes) == 3 and sizes[-1] == 120  # 2 x 60 reviews: train + val of the tiny archive
    assert {r["model"] for r in result["points"]} == {"gru", "nbsvm", "ensemble"}
    assert sorted(result["meta"]["experiments"]) == sorted(names)
    gru_small = next(r for r in result["points"] if r["model"] == "gru" and r["labels"] == sizes[0])
    assert gru_small["experiment"] in names and 0 <= gru_small["error_low"] <= gru_small["error"] <= gru_small["error_high"]
    assert set(result["fits"]) == {"gru", "nbsvm", "ensemble"}
    md = (project.path / "reports" / "scaling.md").read_text()
    assert "error ≈ a·N^(-b) + c" in md and "Hestness" in md and "(scaling/learning_curves.png)" in md
    assert (project.path / "reports" / "scaling" / "learning_curves.png").stat().st_size > 5000

    # the main run is untouched: the experiments live in DVC's refs, not the workspace
    assert project.run("git", "status", "--porcelain", "dvc.lock", "params.yaml", "reports/metrics.json").stdout == ""
