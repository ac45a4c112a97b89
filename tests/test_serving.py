"""The HTTP service (`reweigh serve-model`) as a real server process on loopback, and bulk scoring of files
(`reweigh predict --file TABLE --out OUT`), on a small project trained with `dvc repro`.

A promotion reaching a running service through a real retrain is tested with the served-retrain harness
(tests/retrain_harness.py, tests/test_retrain_e2e.py).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from conftest import Project, make_project

TEXTS = ["A wonderful, superb film: I loved it.", "Dull and awful, a waste of time.", "the plot was a film",
         "brilliant " * 300]  # the last one longer than tokenize.max_length: cut as in training


@pytest.fixture(scope="module")
def served(tmp_path_factory, imdb_archive) -> Project:
    """A small IMDB project, reproduced and committed (so its models have a version: the commit)."""
    project = make_project(tmp_path_factory.mktemp("served"), {"dataset": {"options": {"archive": str(imdb_archive)}},
                                                                "train": {"models": ["gru_attention"]}})
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "trained")
    return project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`reweigh serve-model ARGS` in `workdir` as its own process; its output is collected line by line."""

    def __init__(self, project: Project, *args: str, workdir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "reweigh.cli", "serve-model", "--port", str(self.port), "--no-access-log", *args]
        self.cwd, self.env, self.lines = workdir or project.path, project.env, []

    def __enter__(self) -> "Server":
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"serve-model exited {self.proc.returncode}:\n{''.join(self.lines)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"serve-model did not answer in 120 s:\n{''.join(self.lines)}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def post(self, body, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=body, timeout=60, **kw)

    def get(self, path: str) -> dict:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def cli_predict(project: Project, model: str, texts: list[str], top: int = 8) -> list[dict]:
    out = project.run(sys.executable, "-m", "reweigh.cli", "predict", "--json", "--model", model, "--top", str(top), *texts)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_answers_equal_reweigh_predict_name_the_version_and_describe_the_model(served):
    head = served.run("git", "rev-parse", "HEAD").stdout.strip()
    lock = yaml.safe_load((served.path / "dvc.lock").read_text())
    with Server(served, "--model", "gru_attention") as server:
        single = server.post({"text": TEXTS[0]}).json()
        batch = server.post({"texts": TEXTS}).json()
        explained = server.post({"texts": TEXTS[:2], "explain": True, "top_k": 3}).json()
        health, model = server.get("/health"), server.get("/model")
        docs = httpx.get(f"{server.url}/docs", timeout=30)
        schema = server.get("/openapi.json")

    expected = cli_predict(served, "gru_attention", TEXTS, top=3)
    assert single["model"] == batch["model"] == "gru_attention" and single["version"] == batch["version"] == head[:12]
    assert single["predictions"][0] == {k: expected[0][k] for k in ("label", "probabilities")}
    assert [{k: p[k] for k in ("label", "probabilities")} for p in batch["predictions"]] == \
           [{k: e[k] for k in ("label", "probabilities")} for e in expected]
    assert all("top_tokens" not in p for p in batch["predictions"])  # only when asked: the fused attention path
    assert [p["top_tokens"] for p in explained["predictions"]] == [e["top_tokens"] for e in expected[:2]]

    assert health == {"status": "ok", "model": "gru_attention", "version": head[:12]}
    metrics = json.loads((served.path / "reports" / "metrics.json").read_text())["gru_attention"]
    assert model["name"] == "gru_attention" and model["commit"] == head and model["registered"] is None
    assert model["classes"] == ["neg", "pos"] and model["metrics"]["accuracy"] == metrics["accuracy"]
    assert model["params"] == lock["stages"]["train@gru_attention"]["params"]["params.yaml"]  # as trained
    outs = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    assert model["files"] == {p: outs[p] for p in ("artifacts/gru_attention.pt", "artifacts/tokenizer.json")}
    assert docs.status_code == 200 and "swagger" in docs.text.lower() and "/predict" in schema["paths"]


def test_the_default_is_the_best_model_on_validation_and_concurrent_clients_each_get_their_own_answers(served):
    metrics = json.loads((served.path / "reports" / "metrics.json").read_text())
    best = max((m for m in metrics if "val_accuracy" in metrics[m]), key=lambda m: metrics[m]["val_accuracy"])
    texts = [f"{w} film, the plot was {v}" for w in ("great", "awful", "superb", "dull") for v in ("moving", "a mess", "fine")]
    expected = cli_predict(served, best, texts)
    answers: dict[int, list] = {}
    barrier = threading.Barrier(len(texts) // 2)

    def client(i: int) -> None:  # half the clients send one text, the others two, all at once, twice each
        barrier.wait()
        for _ in range(2):
            body = {"text": texts[2 * i]} if i % 2 else {"texts": texts[2 * i:2 * i + 2]}
            response = server.post(body)
            assert response.status_code == 200, response.text
            answers.setdefault(i, []).append(response.json()["predictions"])

    with Server(served) as server:
        assert server.get("/model")["name"] == best and server.get("/model")["chosen_as"] == "best"
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts) // 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert len(answers) == len(texts) // 2
    for i, got in answers.items():
        want = [expected[2 * i]] if i % 2 else expected[2 * i:2 * i + 2]
        for predictions in got:
            assert [p["label"] for p in predictions] == [w["label"] for w in want]
            assert [p["probabilities"] for p in predictions] == [w["probabilities"] for w in want]


def test_bad_input_gets_a_4xx_that_says_what_to_change_and_the_service_keeps_serving(served):
    params = yaml.safe_load((served.path / "params.yaml").read_text())
    limits = params["serve"]
    cases = [
        ({"texts": []}, 422, "texts is empty"),
        ({"text": "   \n\t"}, 422, "text is empty or only whitespace"),
        ({"texts": ["fine", ""]}, 422, "texts[1] is empty"),
        ({"texts": ["fine", 3]}, 422, "texts.1: Input should be a valid string"),
        ({"text": 3}, 422, "text: Input should be a valid string"),
        ({"text": "a", "texts": ["b"]}, 422, 'send either "text"'),
        ({}, 422, 'send either "text"'),
        ({"text": "a", "model": "gru"}, 422, "model: Extra inputs are not permitted"),
        ({"text": "a", "top_k": 0}, 422, "top_k"),
        ({"texts": ["a"] * (limits["max_texts"] + 1)}, 413, "serve.max_texts"),
        ({"text": "a" * (limits["max_chars"] + 1)}, 413, "serve.max_chars"),
    ]
    with Server(served, "--model", "nbsvm") as server:
        for body, status, said in cases:
            response = server.post(body)
            assert response.status_code == status and said in response.json()["detail"], (body if len(str(body)) < 200 else "big", response.text)
        raw = [(b'{"text": "unfinished', "application/json", 400, "not valid JSON"),
               (b"text=hello", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
               (b'{"text": "hello"}', "text/plain", 415, "Content-Type: application/json"),
               (b"[1, 2]", "application/json", 422, "valid dictionary")]
        for body, kind, status, said in raw:
            response = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": kind}, timeout=30)
            assert response.status_code == status and said in response.json()["detail"], (body, response.text)
        huge = json.dumps({"texts": ["word " * 20_000] * 200}).encode()  # 20 MB: over serve.max_request_mb
        assert len(huge) > limits["max_request_mb"] * 1e6
        response = httpx.post(f"{server.url}/predict", content=huge, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 413 and "serve.max_request_mb" in response.json()["detail"]
        chunked = httpx.post(f"{server.url}/predict", content=iter([huge[i:i + (1 << 20)] for i in range(0, len(huge), 1 << 20)]),
                             headers={"content-type": "application/json"}, timeout=60)  # no length given
        assert chunked.status_code == 413 and "serve.max_request_mb" in chunked.json()["detail"]
        assert server.proc.poll() is None
        ok = server.post({"text": "still serving"})
        assert ok.status_code == 200 and ok.json()["model"] == "nbsvm"


def _copy(project: Project, dest: Path) -> Path:
    shutil.copytree(project.path, dest, ignore=shutil.ignore_patterns("cache", "tmp"))
    return dest


def test_a_missing_or_damaged_model_file_stops_the_start_naming_it(served, tmp_path):
    work = _copy(served, tmp_path / "copy")
    serve = [sys.executable, "-m", "reweigh.cli", "serve-model", "--port", str(free_port())]

    def start(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*serve, *args], cwd=work, env=served.env, capture_output=True, text=True, timeout=120)

    model = work / "artifacts" / "gru_attention.pt"
    model.write_bytes(model.read_bytes()[:4000])  # cut short, as a failed copy leaves it
    damaged = start("--model", "gru_attention")
    assert damaged.returncode == 1 and "artifacts/gru_attention.pt cannot be read" in damaged.stderr, damaged.stderr
    assert "dvc checkout" in damaged.stderr
    model.unlink()
    missing = start("--model", "gru_attention")
    assert missing.returncode == 1 and "gru_attention.pt is missing" in missing.stderr and "dvc repro train@gru_attention" in missing.stderr
    shutil.copy2(served.path / "artifacts" / "gru_attention.pt", model)  # back: only the baseline is damaged now
    (work / "artifacts" / "nbsvm.pkl").write_bytes(b"not a pickle")
    member = start("--model", "ensemble")  # a member of the ensemble damaged: the ensemble does not start either
    assert member.returncode == 1 and "nbsvm.pkl cannot be read" in member.stderr, member.stderr
    unknown = start("--model", "bert")
    assert unknown.returncode == 1 and "--model: unknown model 'bert'" in unknown.stderr and "nbsvm" in unknown.stderr
    (work / "reports" / "metrics.json").unlink()
    no_best = start()
    assert no_best.returncode == 1 and "reports/metrics.json is missing" in no_best.stderr


def test_a_new_model_file_is_served_after_it_settles_without_a_failed_request(served, tmp_path):
    import torch

    work = _copy(served, tmp_path / "copy")
    model = work / "artifacts" / "gru_attention.pt"
    original = model.read_bytes()
    failures: list[str] = []
    stop = threading.Event()
    with Server(served, "--model", "gru_attention", workdir=work) as server:
        before = server.get("/model")

        def client() -> None:  # requests all through the swap
            while not stop.is_set():
                response = server.post({"texts": TEXTS})
                if response.status_code != 200:
                    failures.append(response.text)

        thread = threading.Thread(target=client)
        thread.start()
        try:
            ckpt = torch.load(model, weights_only=False)
            ckpt["state_dict"] = {k: v + 0.05 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
            torch.save(ckpt, work / "artifacts" / ".new.pt")
            os.replace(work / "artifacts" / ".new.pt", model)  # a new version, whole
            after = _wait_for(lambda: server.get("/model"), lambda m: m["version"] != before["version"])
            assert after["files"]["artifacts/gru_attention.pt"] != before["files"]["artifacts/gru_attention.pt"]
            assert after["commit"] is None and after["version"].startswith("md5:")  # HEAD's dvc.lock names the old one

            model.write_bytes(original[:3000])  # a damaged copy: the service keeps the version it has
            time.sleep(3)
            assert server.get("/model")["version"] == after["version"]
            assert any("cannot be loaded" in line and "still serving" in line for line in server.lines), "".join(server.lines)
            model.write_bytes(original)  # the committed model back: HEAD's version again
            back = _wait_for(lambda: server.get("/model"), lambda m: m["version"] == before["version"])
            assert back["commit"] == before["commit"]
        finally:
            stop.set()
            thread.join(60)
    assert not failures, failures[:3]


def _wait_for(get, ok, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = get()
        if ok(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"not reached in {seconds} s; last: {got}")


# ---------------------------------------------------------------- bulk scoring


def _write_table(path: Path) -> list[str]:
    """A CSV as users have them: a quoted comma, a line break inside a text, a number as text, an empty text."""
    texts = ['Superb, "moving" film.', "Dull\nand awful.", "12345", "", "the plot was a film", *TEXTS] * 3
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "review"])
        writer.writerows((f"r{i}", t) for i, t in enumerate(texts))
    return texts


def test_bulk_scoring_streams_a_table_into_predictions_equal_to_predict(served):
    src = served.path / "data" / "raw" / "to score.csv"  # the docs' layout, a space in the name
    texts = _write_table(src)
    out = served.path / "data" / "scored" / "reviews scored.parquet"
    done = served.run(sys.executable, "-m", "reweigh.cli", "predict", "--file", str(src.relative_to(served.path)),
                      "--text-column", "review", "--out", str(out.relative_to(served.path)), "--batch-rows", "4", "--model", "gru_attention")
    assert f"scored {len(texts) - 3} texts" in done.stderr and "3 rows had no text" in done.stderr and "docs/s" in done.stderr
    table = pl.read_parquet(out)
    assert table.columns == ["id", "review", "predicted", "prob_neg", "prob_pos"]
    assert table["id"].to_list() == [f"r{i}" for i in range(len(texts))]
    assert table["review"].to_list() == [t or None for t in texts] or table["review"].to_list() == texts
    scored = [t for t in texts if t]
    expected = cli_predict(served, "gru_attention", scored)
    have = table.filter(pl.col("predicted").is_not_null())
    assert have["predicted"].to_list() == [e["label"] for e in expected]
    assert np.allclose(have.select("prob_neg", "prob_pos").to_numpy(),
                       [[e["probabilities"]["neg"], e["probabilities"]["pos"]] for e in expected], atol=1e-4)
    assert table.filter(pl.col("review").fill_null("") == "")["predicted"].null_count() == 3
    assert not list(out.parent.glob(".*tmp*"))

    # every format in and every format out, a baseline and the ensemble: the same predictions as `reweigh predict`
    expected = {model: [e["label"] for e in cli_predict(served, model, scored)] for model in ("nbsvm", "ensemble")}
    frame = pl.read_csv(src, infer_schema_length=0)
    for i, (src_suffix, out_suffix, model) in enumerate([(".parquet", ".csv", "nbsvm"), (".jsonl", ".tsv", "ensemble"),
                                                         (".tsv", ".jsonl", "nbsvm")]):
        other = served.path / "data" / "raw" / f"to score {i}{src_suffix}"
        {".parquet": frame.write_parquet, ".jsonl": frame.write_ndjson,
         ".tsv": lambda p: frame.write_csv(p, separator="\t")}[src_suffix](other)
        dest = served.path / "data" / "scored" / f"out {i}{out_suffix}"
        served.run(sys.executable, "-m", "reweigh.cli", "predict", "--file", str(other), "--text-column", "review",
                   "--out", str(dest), "--model", model)
        result = (pl.read_ndjson(dest) if out_suffix == ".jsonl"
                  else pl.read_csv(dest, separator="\t" if out_suffix == ".tsv" else ",", infer_schema_length=0))
        assert result.filter(pl.col("predicted").is_not_null())["predicted"].to_list() == expected[model], (src_suffix, model)


def test_bulk_scoring_errors_say_what_to_change_and_leave_nothing_half_written(served):
    src = served.path / "data" / "raw" / "errors.csv"
    _write_table(src)
    out = served.path / "data" / "scored" / "errors.parquet"

    def bulk(*args: str) -> subprocess.CompletedProcess:
        return served.run(sys.executable, "-m", "reweigh.cli", "predict", *args, check=False)

    no_column = bulk("--file", str(src), "--out", str(out), "--model", "nbsvm")  # the default column, text, is not there
    assert no_column.returncode == 1 and "has no column 'text'; its columns: id, review" in no_column.stderr
    assert "--text-column" in no_column.stderr
    same = bulk("--file", str(src), "--out", str(src), "--text-column", "review")
    assert same.returncode == 1 and "is the input file" in same.stderr
    kind = bulk("--file", str(src), "--out", str(out.with_suffix(".xlsx")), "--text-column", "review")
    assert kind.returncode == 1 and "cannot write .xlsx" in kind.stderr
    scored = served.path / "data" / "scored" / "once.parquet"
    bulk("--file", str(src), "--out", str(scored), "--text-column", "review", "--model", "nbsvm")
    again = bulk("--file", str(scored), "--out", str(out), "--text-column", "review")
    assert again.returncode == 1 and "already has column(s) predicted" in again.stderr
    assert not out.exists() and not list(out.parent.glob(".errors*"))  # nothing half-written


def test_the_serving_benchmark_measures_latency_bulk_and_bare_forward(served, tmp_path):
    """`python -m bench --sections serving`'s measuring code on the small project (two models, quick bounds):
    figures, not a time limit."""
    from bench import serving
    from bench.report import _serving

    result = serving.run(served.path, tmp_path, quick=True, only=["gru_attention", "tfidf_lr"])
    assert set(result["models"]) == {"gru_attention", "tfidf_lr"}
    for model, row in result["models"].items():
        assert "error" not in row, row
        levels = row["service"]["levels"]
        assert [lv["clients"] for lv in levels] == [1, 8, 32] and all(lv["failures"] == 0 and lv["requests"] > 0 for lv in levels)
        assert all(0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"] for lv in levels)
        assert row["bulk"]["docs"] == result["bulk_docs"] == row["bare"]["docs"] > 0
        assert row["bulk"]["docs_per_s"] > 0 and row["bare"]["docs_per_s"] > 0 and row["bulk_vs_bare"] > 0
    table = "\n".join(_serving(result))
    assert "| gru_attention | 8 |" in table and "| tfidf_lr |" in table
