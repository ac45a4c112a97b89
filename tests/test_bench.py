"""`python -m bench --quick` on a small synthetic archive: every section runs and bench.json has its shape.

Benchmarks report; nothing here checks a time, only that each figure is there and of the right type.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import make_imdb_archive
from retrain_harness import OUTPUT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the bench command's own limit below (15 min here)
ROOT = Path(__file__).resolve().parents[1]


def _processes_with(env_entry: str) -> list[str]:
    """Command lines of the live processes whose environment holds `env_entry`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and env_entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def test_quick_bench_writes_json_and_markdown(tmp_path):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    out = tmp_path / "out"
    run_id = uuid.uuid4().hex  # inherited by every process the benchmark starts
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), REWEIGH_CACHE=str(tmp_path / "cache"),
               REWEIGH_BENCH_TEST=run_id)
    env.pop("REWEIGH_IMDB_ARCHIVE", None)
    from bench.__main__ import DEFAULT_SECTIONS

    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--archive", str(archive), "--out", str(out),
                        "--sections", ",".join((*DEFAULT_SECTIONS, "scale")), "--scale-sizes", "400", "--scale-train", "300"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-6000:]
    # Nothing it started outlives it (its Prefect overhead probe once left a temporary API server running).
    assert _processes_with(f"REWEIGH_BENCH_TEST={run_id}") == []
    b = json.loads((out / "bench.json").read_text())
    # where the quick bench spends its minutes (the suite's longest test), kept for whoever trims it
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "bench-sections.json").write_text(json.dumps({k: v.get("section_seconds") for k, v in b.items()
                                                             if isinstance(v, dict) and "section_seconds" in v}, indent=2))

    meta = b["meta"]
    assert meta["mode"] == "quick" and meta["documents"] == 280
    assert meta["splits"] == {"test": 120, "train": 120, "unsup": 40}
    assert _num(meta["machine"]["cores"]) and _num(meta["machine"]["torch_threads"]) and meta["date"]
    for section in ("clean", "tokenize", "train", "pipeline", "accuracy", "pretrain", "ablations"):
        assert "error" not in b[section], (section, b[section].get("error"))

    c = b["clean"]
    for impl in ("polars", "polars_1_thread", "baseline_re_recipe"):
        assert c[impl]["docs"] == 280 and _num(c[impl]["docs_per_s"]) and _num(c[impl]["peak_rss_mb"])
    assert _num(c["speedup"]) and set(c["polars"]["step_seconds"]) == set(c["steps"])
    a = c["agreement"]
    # The synthetic reviews all carry "&amp;": the recipe leaves "amp", the pipeline decodes it.
    assert a["differing_documents"] == a["differing_with_html_entities"] + a["differing_with_other_markup"] + a["differing_unexplained"]
    assert a["differing_unexplained"] == 0

    t = b["tokenize"]
    assert set(t["kinds"]) == {"word", "bpe", "wordpiece", "char"}
    for r_ in t["kinds"].values():
        for key in ("train_s", "train_docs_per_s", "encode_docs_per_s", "encode_tokens_per_s", "peak_rss_mb"):
            assert _num(r_[key]), key
        assert r_["encode_docs"] == 240
    assert t["char_fast_path"]["same_ids"] is True and _num(t["char_fast_path"]["speedup"])

    for name in ("gru", "gru_attention"):
        m = b["train"]["models"][name]
        for mode in ("bucketed", "random", "fixed_max"):
            for key in ("s_per_batch", "tokens_per_s", "s_per_epoch", "padding_share", "peak_rss_mb"):
                assert _num(m[mode][key]), (name, mode, key)
        # Padding to the fixed maximum can only add padding.
        assert m["fixed_max"]["padding_share"] >= m["random"]["padding_share"] >= m["bucketed"]["padding_share"]
        assert _num(m["speedup_bucketed_vs_fixed"])

    p = b["pipeline"]
    assert list(p["stages"])[:4] == ["sources", "ingest", "clean", "tokenize"]
    for s in p["stages"].values():
        assert s["returncode"] == 0 and _num(s["wall_s"]) and _num(s["stage_s"]) and _num(s["stage_peak_rss_mb"])
    assert _num(p["cold_repro_s"]) and _num(p["noop_repro_s"]) and p["noop_stages_run"] == ["sources"]  # only the freshness check
    assert p["slowest_stage"] in p["stages"]
    po = p["prefect_overhead"]
    assert len(po["as_flow_s"]) == len(po["bare_s"]) == 2 and _num(po["first_call_overhead_s"])

    acc = b["accuracy"]
    assert acc["references_accuracy_pct"]["NBSVM-bi, Wang & Manning 2012"] == 91.22
    assert isinstance(acc["models"], dict) and acc["source"]
    if (ROOT / "dvc.yaml").read_text().count("metrics.json"):  # once the report stage exists
        assert acc["models"], acc["source"]

    pt = b["pretrain"]  # --quick: the stage runs train one neural model and one baseline
    from bench.__main__ import QUICK_STAGE_MODELS

    assert [(r["dataset"], r["model"], r["init"]) for r in pt["models"]] == [
        (d, m, i) for d, i in (("all", "pretrained"), ("all", "random"), ("limited", "random"), ("limited", "pretrained"))
        for m in QUICK_STAGE_MODELS]
    assert set(pt["baseline"]) == set(pt["pretrain"]) == {"all", "limited"}
    for r_ in pt["models"] + list(pt["baseline"].values()):
        assert 0 <= r_["accuracy"] <= 1 and 0 <= r_["macro_f1"] <= 1 and _num(r_["train_seconds"]), r_
    for r_ in pt["models"]:
        assert 1 <= r_["best_epoch"] <= r_["epochs"] and r_["stop_reason"], r_
    # --quick --limit 1000 on 120 training reviews: the few-labels runs keep 100 of them (90 train + 10 val);
    # test and unlabelled text are the same in both.
    assert pt["train_limit"] == 100
    assert pt["datasets"]["all"] == {"train": 108, "val": 12, "test": 120, "unsup": 40}
    assert pt["datasets"]["limited"] == {"train": 90, "val": 10, "test": 120, "unsup": 40}
    for s in pt["pretrain"].values():
        assert _num(s["seconds"]) and _num(s["peak_rss_mib"]) and s["tokens"] > 0 and s["documents"]["unsup"] == 40
    assert set(pt["gain_pts"]["limited"]) == set(QUICK_STAGE_MODELS)
    # DVC reruns only what changed: init alone retrains the models (and the report), not the data or the embedding.
    ran = [set(r_["stages_run"]) - {"sources"} for r_ in pt["runs"]]  # `sources`: the check every repro runs
    # --quick: the first run starts from a copy of the pipeline section's project, reproduced with the same
    # params, so it has nothing to do; the switch to few labels reruns everything from ingest.
    assert pt["runs"][0]["reused"] and ran[0] == set() and {"ingest", "pretrain", "baseline@tfidf_lr"} <= ran[2]
    assert ran[1] - {"ensemble", "report"} == ran[3] - {"ensemble", "report"} == {f"train@{m}" for m in QUICK_STAGE_MODELS}
    assert {"train@gru_attention", "baseline@nbsvm"}.isdisjoint(set().union(*ran, p["stages"]))

    from bench.ablations import ABLATIONS

    ab = b["ablations"]  # every variant trained on the quick project's arrays, --quick: at most 2 epochs
    assert list(ab["variants"]) == list(ABLATIONS) and ab["meta"]["epochs_cap"] == 2
    for v in ab["variants"].values():
        assert 0 <= v["test_accuracy"] <= 1 and _num(v["s_per_epoch"]) and 1 <= v["best_epoch"] <= v["epochs"] <= 2, v
        # the language model's encoder fits the GRUs; the CNN and the Transformer take its embedding only
        gru = v["model"] in ("gru", "gru_attention")
        assert v["init"] == "ppmi_svd+bilm" + ("" if gru else ", embedding only") and len(v["history"]) == v["epochs"], v
    assert ab["variants"]["transformer"]["predictions_changed"] == 0, "the mask keeps padding out"
    assert Path(ab["figure"]).is_file()

    sc = b["scale"]  # the quick reviews repeated to 400 (one size: each dask run starts a cluster)
    assert list(sc["sizes"]) == ["400"] and sc["stages"] == ["ingest", "clean", "tokenize"]
    for n, row in sc["sizes"].items():
        assert row["corpus"]["documents"] == int(n)
        for stage in sc["stages"]:
            r_ = row[stage]
            assert _num(r_["docs_per_s"]) and _num(r_["peak_rss_mb"]) and _num(r_["in_memory"]["peak_rss_mb"]), (n, stage)
            assert _num(r_["stream_vs_in_memory_speed"]) and _num(r_["stream_vs_in_memory_rss"]), (n, stage)
            assert ("dask" in r_) == (stage != "ingest"), (n, stage)  # ingest has no engine
            if stage != "ingest":
                assert _num(r_["dask"]["docs_per_s"]) and _num(r_["dask"]["workers_peak_rss_mb"]) and _num(r_["dask"]["vs_local_docs_per_s"]), (n, stage)
    same = sc["sizes"]["400"]["same_outputs"]
    assert same == {"ingest": True, "clean": True, "tokens": True, "tokenizer": True}
    tr = sc["train"]  # --scale-train 300: 300 labelled documents, 100 of them test, one GRU epoch
    assert tr["corpus"]["documents"] == 400 and tr["rows"]["test"] == 100 and tr["rows"]["train"] + tr["rows"]["val"] == 300
    assert tr["train_gru"]["epochs"] == 1 and len(tr["train_gru"]["history"]) == 1
    assert all(_num(tr[k]["peak_rss_mb"]) for k in (*sc["stages"], "train_gru"))

    md = (out / "bench.md").read_text()
    for heading in ("## clean", "## tokenize", "## train", "## whole pipeline", "## accuracy", "## pretrain", "## ablations", "## scale"):
        assert heading in md
    assert "One GRU training epoch" in md
    assert "| baseline (TF-IDF) | – |" in md
    assert "| polars, 1 thread |" in md and "91.22%" in md and "torch threads" in md
