"""ingest → clean → tokenize through a real `dvc repro`, each stage a real Prefect flow run."""
from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import polars as pl
import pytest

from conftest import make_project

pytestmark = pytest.mark.slow


def _stages_run(output: str) -> list[str]:
    """The stages `dvc repro` ran after `sources`, the freshness check that runs first every time."""
    ran = re.findall(r"Running stage '([^']+)'", output)
    assert ran[:1] == ["sources"], output[-2000:]
    return ran[1:]


def _flow_runs(prefect_home: Path) -> dict[str, str]:
    """Flow name → state of its last run, read from Prefect's own database."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        rows = db.execute(
            "SELECT flow.name, flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id ORDER BY flow_run.created"
        ).fetchall()
    return {name: state for name, state in rows}


def test_repro_runs_ingest_clean_tokenize_as_prefect_flows_and_is_incremental(tmp_path, imdb_archive):
    # No server up, as for a new user: `reweigh repro` (what `make repro` runs) starts one Prefect server for
    # every stage; a plain `dvc repro` (below) makes each stage start its own temporary API. Both record the
    # runs in PREFECT_HOME's database.
    project = make_project(tmp_path, {"dataset": {"options": {"archive": str(imdb_archive)}}}, prefect_server=False)
    first = project.run(str(Path(sys.executable).parent / "reweigh"), "repro", "tokenize")
    assert _stages_run(first.stdout) == ["ingest", "clean", "tokenize"]
    assert "Starting temporary server" not in first.stdout + first.stderr

    # Each stage ran as a Prefect flow that completed.
    runs = _flow_runs(Path(project.env["PREFECT_HOME"]))
    assert {runs.get(name) for name in ("ingest", "clean", "tokenize")} == {"COMPLETED"}

    p = project.path
    ingested = pl.read_parquet(p / "data/ingested.parquet")
    counts = dict(ingested.group_by("split").len().iter_rows())
    # 60 reviews per label per split; 10% of train (6 per label) carved into val; unsup kept.
    assert counts == {"train": 108, "val": 12, "test": 120, "unsup": 40}
    val = ingested.filter(pl.col("split") == "val")
    assert dict(val.group_by("label").len().iter_rows()) == {"neg": 6, "pos": 6}
    assert set(ingested["id"].filter(ingested["split"] == "val")) <= {i for i in ingested["id"] if i.startswith("train/")}
    assert json.loads((p / "data/dataset.json").read_text())["labels"] == ["neg", "pos"]
    report = json.loads((p / "reports/validation.json").read_text())
    assert report["success"] is True and report["failed"] == 0 and report["rows"] == 280

    clean = pl.read_parquet(p / "data/clean.parquet")
    assert not clean["text"].str.contains(r"<br|&amp;|[A-Z!.]").any()

    tokens = pl.read_parquet(p / "data/tokens.parquet")
    assert set(tokens["split"]) == {"train", "val", "test"}  # unsup only trains the tokenizer
    assert tokens.height == 240 and tokens["length"].max() <= 64
    assert tokens["label_id"].to_list() == [0 if l == "neg" else 1 for l in tokens["label"]]
    assert (p / "artifacts/tokenizer.json").exists()

    # Nothing changed: a second repro runs nothing but the `sources` check.
    again = project.dvc("repro", "tokenize")
    assert _stages_run(again.stdout) == []

    # One param changed: dvc sees it, and only tokenize reruns.
    project.set_params({"tokenize": {"vocab_size": 150}})
    diff = project.dvc("params", "diff", "--json")
    change = json.loads(diff.stdout)["params.yaml"]["tokenize.vocab_size"]
    assert (change["old"], change["new"]) == (200, 150)
    third = project.dvc("repro", "tokenize")
    assert _stages_run(third.stdout) == ["tokenize"]
    assert "Starting temporary server" in third.stdout + third.stderr  # plain dvc repro: the stage starts its own
    assert json.loads((p / "reports/tokenize.json").read_text())["vocab_size"] <= 150


def test_validation_failure_stops_ingest_with_a_readable_message(tmp_path):
    from tests.conftest import make_project

    bad = tmp_path / "bad.csv"
    pl.DataFrame({"text": ["good film", "bad film", "", "fine"] * 5, "label": ["pos", "neg", "pos", "meh"] * 5}).write_csv(bad)
    project = make_project(tmp_path)
    project.replace_section("dataset", {"name": "table", "options": {"path": str(bad), "labels": ["neg", "pos"]}})
    result = project.dvc("repro", "ingest", check=False)
    assert result.returncode != 0
    err = result.stdout + result.stderr
    assert "dataset 'bad.csv' failed validation" in err
    assert "expect_column_values_to_be_in_set on label: 5 row(s)" in err
    assert "'label': 'meh'" in err  # a sample row
    assert "expect_column_values_to_not_match_regex on text" in err
    assert not (project.path / "data/ingested.parquet").exists()
    assert json.loads((project.path / "reports/validation.json").read_text())["success"] is False
