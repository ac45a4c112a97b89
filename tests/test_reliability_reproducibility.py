"""Two `dvc repro` runs from clean give byte-identical outputs; `dvc exp run -S seed=...` changes them."""
from __future__ import annotations

import hashlib
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import make_project

pytestmark = pytest.mark.slow

OUTPUT_DIRS = ("data", "artifacts", "reports")
# Wall-clock time is measured, not reproduced: these files hold it (and nothing else varies in them).
WALL_CLOCK = ("reports/timings.json", "reports/report.md", "reports/train/", "reports/ensemble.json", "artifacts/checkpoints/")


def outputs(root: Path) -> dict[str, str]:
    """sha256 of every stage output (DVC's .gitignore files, hidden temporaries and timings aside)."""
    return {
        name: hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in OUTPUT_DIRS for path in sorted((root / folder).rglob("*"))
        if path.is_file() and not path.name.startswith(".")
        and not (name := str(path.relative_to(root))).startswith(WALL_CLOCK)
    }


def without_timings(value):
    """A training report with its wall-clock fields (`seconds`, `train_seconds`, ...) removed."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k and k != "threads"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def canonical_pickle(path: Path) -> dict[str, str]:
    """A baseline's .pkl compared part by part, with sklearn's `_stop_words_id` dropped: a fitted vectoriser
    keeps id(stop_words), a memory address, so the raw pickle differs between runs in those bytes."""
    obj = pickle.loads(path.read_bytes())
    obj["pipeline"].steps[0][1].__dict__.pop("_stop_words_id", None)
    return {key: hashlib.sha256(pickle.dumps(value)).hexdigest() for key, value in obj.items()}


def test_two_cold_runs_are_byte_identical_and_a_new_seed_changes_them(tmp_path, imdb_archive):
    # Three clean checkouts, each with its own DVC cache, run side by side: two with the same params,
    # one with another seed through `dvc exp run -S` (up to train@gru).
    # a and b at train.threads 2, the default: torch splits its work over two threads and must still
    # reproduce (the language model's embedding gradient once summed its rows in whichever order the threads
    # finished). Three runs share the machine here, where OpenMP's spinning threads stall (docs/design.md):
    # they sleep instead, which changes the waiting, not the arithmetic.
    a, b, other = (make_project(tmp_path / name, {"dataset": {"options": {"archive": str(imdb_archive)}},
                                                  "train": {"threads": threads}})
                   for name, threads in (("a", 2), ("b", 2), ("seed", 1)))
    for project in (a, b):
        project.env["OMP_WAIT_POLICY"] = "PASSIVE"
    with ThreadPoolExecutor(3) as pool:
        # the seed experiment runs up to one model: the seed reaches every stage through ingest's split
        runs = [pool.submit(a.dvc, "repro"), pool.submit(b.dvc, "repro"),
                pool.submit(other.dvc, "exp", "run", "-S", "seed=7", "train@gru")]
        for run in runs:
            run.result()

    out_a, out_b = outputs(a.path), outputs(b.path)
    for name in ("reports/metrics.json", "data/tokens.parquet", "artifacts/gru.pt", "artifacts/gru_attention.pt", "artifacts/tfidf_lr.pkl",
                 "artifacts/nbsvm.pkl", "artifacts/ensemble.json", "data/predictions/ensemble.parquet"):
        assert name in out_a, f"{name} missing after dvc repro"
    assert (a.path / "reports/metrics.json").read_bytes() == (b.path / "reports/metrics.json").read_bytes()
    pickles = {name for name in out_a if name.endswith(".pkl")}
    assert {n: out_a[n] for n in out_a if n not in pickles} == {n: out_b[n] for n in out_b if n not in pickles}
    assert [canonical_pickle(a.path / n) for n in sorted(pickles)] == [canonical_pickle(b.path / n) for n in sorted(pickles)]
    for model in ("gru", "gru_attention", "tfidf_lr", "nbsvm"):
        report_a, report_b = (json.loads((project.path / f"reports/train/{model}.json").read_text()) for project in (a, b))
        assert without_timings(report_a) == without_timings(report_b)
    # Each torch stage records the machine it ran on: what to compare first when two runs differ.
    machine = json.loads((a.path / "reports/train/gru.json").read_text())["machine"]
    assert machine["torch_threads"] == min(2, machine["cores"]) and machine["cpu"]
    assert json.loads((a.path / "reports/pretrain.json").read_text())["machine"] == machine
    locks = [yaml.safe_load((project.path / "dvc.lock").read_text())["stages"] for project in (a, b)]
    for stage in locks[0]:  # every output hash DVC recorded is equal too, timing files and pickles aside
        outs = [{o["path"]: o.get("md5") for o in lock[stage].get("outs", []) if not o["path"].startswith(WALL_CLOCK) and o["path"] not in pickles} for lock in locks]
        assert outs[0] == outs[1], stage

    # A changed seed is a different experiment: another validation split, other weights, other predictions.
    changed = outputs(other.path)
    for name in ("data/ingested.parquet", "data/tokens.parquet", "artifacts/pretrained.pt", "artifacts/gru.pt",
                 "data/predictions/gru.parquet"):
        assert changed[name] != out_a[name], name
    assert json.loads(other.dvc("exp", "show", "--json").stdout), "dvc exp show lists no experiment"
