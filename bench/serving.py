"""serving: the HTTP service under concurrent clients, bulk scoring of raw text, and the bare forward they wrap.

For each model of the run (reports/metrics.json: neural models, baselines, the ensemble):
- `reweigh serve-model --model M` is started as its own process on loopback; asyncio clients (httpx) send one
  raw test review per request, 1, 8 and 32 of them at once, each level bounded in requests and seconds after
  a warm-up: latency p50 / p95 / p99 and requests/s, and the server's peak RSS. The clients run in this
  process on the same cores as the server, as a co-located caller would.
- bulk: `flows.bulk.score_file` over N raw test reviews in a Parquet file (read, clean, tokenize, score, write),
  in a fresh child process: docs/s and peak RSS;
- bare: the same reviews already cleaned and encoded, only the model's forward in batches under
  torch.inference_mode (a baseline: its pipeline's predict_proba on cleaned text), in a fresh child: docs/s.
  bulk / bare says what the predict path costs beyond the model itself.
  Full mode runs bulk and bare three times each, in turn (bulk, bare, bulk, ...), and reports each one's median:
  on this 2-core machine one run of either varied by 15% from the next (5.7-6.6 s for the same forward).

Full mode reads the workspace's run (a finished `make repro`); --quick the pipeline section's project.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import in_child, rate, ratio

LEVELS = (1, 8, 32)
REPEATS = 3  # bulk and bare runs per model (full mode), reported by their median


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median docs/s, and every run's docs/s."""
    timed = sorted((r for r in runs if r.get("docs_per_s")), key=lambda r: r["docs_per_s"])
    mid = dict(timed[(len(timed) - 1) // 2] if timed else runs[0])
    return mid | {"runs_docs_per_s": [r.get("docs_per_s") for r in runs]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float | None:
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmHWM"))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return None


async def _load(url: str, texts: list[str], clients: int, requests: int, seconds: float, seed: int) -> dict[str, Any]:
    """`clients` concurrent clients, one text per request, until `requests` are answered or `seconds` pass."""
    import httpx
    import numpy as np

    rng = random.Random(seed)
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while len(latencies) + failures < requests and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = await http.post(f"{url}/predict", json={"text": rng.choice(texts)})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for _ in range(min(10, requests)):  # warm-up: connections, first forwards
            await http.post(f"{url}/predict", json={"text": rng.choice(texts)})
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "failures": failures, "seconds": round(wall, 2),
            "requests_per_s": rate(len(latencies), wall),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) if len(ms) else None for q in (50, 95, 99)}}


def _serve(project: Path, model: str, texts: list[str], quick: bool) -> dict[str, Any]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(project)}
    proc = subprocess.Popen([sys.executable, "-m", "reweigh.cli", "serve-model", "--model", model, "--port", str(port),
                             "--no-access-log"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve-model {model} exited {proc.returncode}: {proc.stderr.read()[-1500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if time.perf_counter() - t0 > 180:
                raise RuntimeError(f"serve-model {model} did not answer in 180 s")
        start_s = time.perf_counter() - t0
        version = httpx.get(f"{url}/health", timeout=10).json()["version"]
        requests, seconds = (60, 10) if quick else (400, 30)
        levels = [asyncio.run(_load(url, texts, c, requests * (1 if c == 1 else 2), seconds, c)) for c in LEVELS]
        return {"start_s": round(start_s, 1), "version": version, "levels": levels, "server_peak_rss_mb": _peak_rss_mb(proc.pid)}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _bulk(project: str, model: str, src: str, out: str) -> dict[str, Any]:
    """In a fresh child: score_file over the Parquet of raw reviews."""
    os.chdir(project)
    sys.path.insert(0, project)
    from flows.bulk import score_file

    summary = score_file(Path(src), Path(out), model, "text", artifacts=Path(project) / "artifacts", progress=False)
    return {"docs": summary["rows"], "seconds": summary["seconds"], "docs_per_s": summary["docs_per_second"]}


def _bare(project: str, model: str, src: str) -> dict[str, Any]:
    """In a fresh child: the model's own work only, on reviews already cleaned and encoded (not timed)."""
    os.chdir(project)
    sys.path.insert(0, project)
    import polars as pl
    import torch

    from flows.clean import clean_texts
    from flows.predict import BATCH, BaselinePredictor, NeuralPredictor, load_predictor
    from models.train_loop import predict_proba

    texts = pl.read_parquet(src)["text"].to_list()
    p = load_predictor(model, Path(project) / "artifacts")
    if isinstance(p, NeuralPredictor):
        data = p.encode(texts)
        t0 = time.perf_counter()
        with torch.inference_mode():
            predict_proba(p.net, data, BATCH // 2)
    elif isinstance(p, BaselinePredictor):
        cleaned = clean_texts(texts, p.clean_steps)
        t0 = time.perf_counter()
        p.pipeline.predict_proba(cleaned)
    else:
        return {"docs": len(texts), "seconds": None, "docs_per_s": None, "note": "the ensemble has no single forward: see its members"}
    seconds = time.perf_counter() - t0
    return {"docs": len(texts), "seconds": round(seconds, 2), "docs_per_s": rate(len(texts), seconds)}


def run(project: Path, work: Path, quick: bool, seed: int = 42, only: list[str] | None = None) -> dict[str, Any]:
    import polars as pl

    metrics_file = project / "reports" / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} is missing: the serving section needs a finished run "
                                "(make repro; --quick: the pipeline section)")
    models = [m for m, v in json.loads(metrics_file.read_text()).items()
              if isinstance(v, dict) and "accuracy" in v and (only is None or m in only)]
    test = pl.read_parquet(project / "data" / "ingested.parquet").filter(pl.col("split") == "test")
    n_bulk = min(test.height, 500 if quick else 5000)
    sample = test.sample(n=n_bulk, seed=seed).select("text")
    src = work / "serving-reviews.parquet"
    sample.write_parquet(src)
    texts = sample["text"].to_list()
    out: dict[str, Any] = {"project": str(project), "bulk_docs": n_bulk, "levels": list(LEVELS), "models": {}}
    for model in models:
        row: dict[str, Any] = {}
        try:
            row["service"] = _serve(project, model, texts, quick)
            bulk, bare = [], []
            for _ in range(1 if quick else REPEATS):  # in turn, so a slow spell of the machine hits both
                bulk.append(in_child(_bulk, str(project), model, str(src), str(work / f"scored-{model}.parquet")))
                bare.append(in_child(_bare, str(project), model, str(src)))
            row["bulk"], row["bare"] = _median(bulk), _median(bare)
            if row["bare"].get("docs_per_s"):
                row["bulk_vs_bare"] = ratio(row["bulk"]["docs_per_s"], row["bare"]["docs_per_s"])
        except Exception as exc:  # one model's failure must not lose the others'
            row["error"] = f"{type(exc).__name__}: {str(exc)[-1000:]}"
        out["models"][model] = row
    return out
