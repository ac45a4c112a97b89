"""Worked example 1 of docs/adapters.md, followed as a user would: a code adapter for a folder-per-label
corpus of XML documents, copied from the guide into adapters/, selected in params.yaml, run by `dvc repro`.

The adapter keeps the markup; the clean stage must strip it.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import guide_example, make_project, select_dataset

pytestmark = pytest.mark.slow

TOPICS = {
    "cooking": "dough oven knead flour simmer garlic butter recipe bake whisk".split(),
    "space": "orbit rocket comet nebula astronaut telescope galaxy launch planet lunar".split(),
}
FILLER = "the a of and to we this then it after with first".split()


def sentence(rng: random.Random, cues: list[str], words: int = 12) -> str:
    return " ".join(rng.choice(cues) if rng.random() < 0.3 else rng.choice(FILLER) for _ in range(words))


def write_corpus(root: Path, per_label: int = 60, seed: int = 0) -> None:
    rng = random.Random(seed)
    for label, cues in TOPICS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            (root / label / f"{i:04d}.xml").write_text(
                '<?xml version="1.0" encoding="utf-8"?>\n'
                f'<doc id="{label}-{i}"><title>{sentence(rng, cues, 4).title()}</title>\n'
                f"<body><p>{sentence(rng, cues)} &amp; {sentence(rng, cues)}</p>\n"
                f'<p class="note">{sentence(rng, cues)} &#8212; <em>{rng.choice(cues)}</em></p></body></doc>\n'
            )


def test_xml_folder_corpus_from_the_guide_runs_through_dvc_repro(tmp_path):
    project = make_project(tmp_path)
    (project.path / "adapters" / "xml_folders.py").write_text(guide_example("adapters/xml_folders.py"))
    write_corpus(project.path / "data" / "raw" / "xml_folders")
    select_dataset(project, guide_example("params.yaml (xml_folders)"))
    # every stage, with one model of each kind: the adapter is what is new here (the model set: test_model_set)
    project.set_params({"train": {"models": ["gru"]}, "baseline": {"models": ["nbsvm"]}})

    checked = project.run(sys.executable, "-m", "reweigh.cli", "validate")
    assert "dataset 'xml_folders' passed" in checked.stdout, checked.stdout

    project.dvc("repro")

    info = json.loads((project.path / "data" / "dataset.json").read_text())
    assert info["name"] == "xml_folders" and info["labels"] == ["cooking", "space"]
    assert {"train", "val", "test"} <= set(info["rows"]) and sum(info["rows"].values()) == 120

    ingested = pl.read_parquet(project.path / "data" / "ingested.parquet")
    assert ingested["text"].str.contains("<body><p>", literal=True).all()  # the adapter kept the markup ...
    clean = pl.read_parquet(project.path / "data" / "clean.parquet")
    assert not clean["text"].str.contains(r"[<>]|&(amp|#8212);|xml version|class note").any()  # ... clean removed it
    for label, cues in TOPICS.items():  # the words inside the tags stayed (every document has an <em> cue word)
        assert clean.filter(pl.col("label") == label)["text"].str.contains(rf"\b({'|'.join(cues)})\b").all()
    first = clean.filter(pl.col("id") == "cooking/0000.xml")["text"][0]
    assert first == " ".join(first.split()) and first.islower()

    assert (project.path / "data" / "tokens.parquet").is_file()
    stages = yaml.safe_load((project.path / "dvc.yaml").read_text())["stages"]
    if "report" in stages:  # the whole pipeline: the model, the baseline and their ensemble, reported
        metrics = project.path / "reports" / "metrics.json"
        assert metrics.is_file() and json.loads(metrics.read_text())
        text = metrics.read_text() + (project.path / "reports" / "report.md").read_text()
        assert "cooking" in text and "space" in text
