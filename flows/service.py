"""The HTTP service: `reweigh serve-model` serves one model of the set (neural, baseline or the ensemble).

    POST /predict   {"text": "..."} or {"texts": [...]}, optional "explain": true (the tokens an attention model
                    weighed most), "top_k"; each text's label and class probabilities, with the model and version
    GET  /health    the service is up and which model version it serves
    GET  /model     name, version (commit, registered GTO version, file digests), classes, test metrics, the
                    params it was trained with (as dvc.lock recorded them)
    GET  /docs      OpenAPI docs (and /openapi.json)

Texts go through the model's Predictor (flows/predict.py), the one path `reweigh predict` and bulk scoring use,
so a text is cleaned, tokenized and cut exactly as in training. Requests that arrive together are scored
together: one worker thread runs the model, and while it scores one batch the next requests queue and are
then scored as one batch of up to serve.batch_size texts (adaptive batching, as TorchServe and BentoML do).

A promotion reaches the service by itself: a watcher checks the model's files every half second and, once a
change has settled (serve.reload_settle), loads the new version beside the old one, scores a text with it, and
swaps it in; requests in flight finish on the old one, none is dropped. Files that cannot be loaded (a half-
written copy) leave the old version serving. Limits (serve.* in params.yaml) turn bad input into a 4xx
that says what to change; the service keeps serving.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults)
import asyncio
import os
import hashlib
import json
import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from flows.predict import ModelFileError, Predictor, load_predictor, model_files, stamp
from reweigh.params import ServeParams

log = logging.getLogger("uvicorn.error")  # the server's own log: reloads show beside its start-up lines
POLL_SECONDS = 0.5


class ServiceError(RuntimeError):
    """The service cannot start: no such model, or its files are missing or unreadable."""


# ---------------------------------------------------------------- which model, which version


def best_model(root: Path) -> str:
    """The model with the highest validation accuracy in reports/metrics.json (the first listed on a tie): chosen
    on validation, as the report chooses its thresholds and its bar, never on test."""
    path = root / "reports" / "metrics.json"
    if not path.is_file():
        raise ServiceError(f"{path} is missing, so there is no best model to serve: run `dvc repro` first, or name one "
                           "with --model (or serve.model in params.yaml)")
    metrics = json.loads(path.read_text())
    scored = [(m, v["val_accuracy"]) for m, v in metrics.items() if isinstance(v, dict) and "val_accuracy" in v]
    if not scored:
        raise ServiceError(f"{path} records no model's val_accuracy: rerun the report (dvc repro report)")
    return max(scored, key=lambda mv: mv[1])[0]  # max keeps the first of equals


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


def git_stamp(root: Path) -> tuple:
    """The state of HEAD, its branch and the tags, by file stats: a commit or a GTO tag changes it."""
    git = root / ".git"
    paths = [git / "HEAD", git / "packed-refs", git / "refs" / "tags"]
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            paths.append(git / head[5:])
    except OSError:
        pass
    return stamp(*paths)


def version_of(root: Path, name: str, files: tuple[Path, ...]) -> dict[str, Any]:
    """Which version the loaded files are: their MD5s (as DVC records them), the stage params dvc.lock recorded for
    them, the git commit whose dvc.lock names exactly these files, and the GTO version registered for that commit's
    contents (the champion's, after a promotion: flows/retrain/versions.py)."""
    digests = {str(f.relative_to(root)): _md5(f) for f in files}  # files: root/artifacts/..., root absolute
    lock_path = root / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    recorded, params = {}, {}
    for stage, entry in (lock or {}).get("stages", {}).items():
        for out in entry.get("outs", []):
            recorded[out["path"]] = out.get("md5")
        if stage in (f"train@{name}", f"baseline@{name}", name):
            params = entry.get("params", {}).get("params.yaml", {})
    in_lock = all(recorded.get(path) == md5 for path, md5 in digests.items())
    head = _git(root, "rev-parse", "HEAD")
    commit = head.stdout.strip() if head.returncode == 0 else None
    committed = _git(root, "rev-parse", "-q", "--verify", "HEAD:dvc.lock").stdout.strip()
    if commit and not (in_lock and committed and committed == _git(root, "hash-object", "dvc.lock").stdout.strip()):
        commit = None  # the workspace's model is not the one HEAD's dvc.lock records
    registered = _registered(root, commit) if commit else None
    combined = hashlib.md5("".join(f"{path} {md5}\n" for path, md5 in sorted(digests.items())).encode()).hexdigest()
    label = registered or (commit[:12] if commit else f"md5:{combined[:12]}")  # unversioned: what the files hold
    return {"version": label, "registered": registered, "commit": commit, "in_dvc_lock": in_lock,
            "files": digests, "params": params}


def _registered(root: Path, commit: str) -> str | None:
    """The GTO version of text-classifier whose commit holds the same dvc.lock, params.yaml and reports/ as
    `commit` (a rollback's commit is the version it restored); None when none is registered."""
    from flows.retrain.versions import ARTIFACT, content, versions

    if not _git(root, "tag", "--list", f"{ARTIFACT}@*").stdout.strip():
        return None  # no version registered: skip GTO
    mine = content(root, commit)
    return next((v["version"] for v in versions(root) if v["commit"] == commit or content(root, v["commit"]) == mine), None)


@dataclass(frozen=True)
class Served:
    """What the service serves now: a loaded model and what it is."""

    name: str
    predictor: Predictor
    files_stamp: tuple  # the model's files when loaded: a change means a new version
    meta_stamp: tuple  # dvc.lock, reports/metrics.json and git refs: a change means new version facts
    version: dict[str, Any]
    metrics: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)


def _meta_stamp(root: Path) -> tuple:
    return stamp(root / "dvc.lock", root / "reports" / "metrics.json"), git_stamp(root)


def _metrics(root: Path, name: str) -> dict[str, Any]:
    path = root / "reports" / "metrics.json"
    try:
        m = json.loads(path.read_text()).get(name, {})
    except (OSError, ValueError):
        return {}
    keys = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "f1_macro_ci_low", "f1_macro_ci_high",
            "roc_auc", "pr_auc", "val_accuracy")
    return {k: m[k] for k in keys if k in m} | ({"per_class": m["per_class"]} if "per_class" in m else {})


def load_served(root: Path, wanted: str) -> Served:
    """The model `wanted` names ("best" or a model), loaded from root/artifacts, with its version facts."""
    name = best_model(root) if wanted == "best" else wanted
    files = model_files(name, root / "artifacts")
    before, meta = stamp(*files), _meta_stamp(root)
    try:
        predictor = load_predictor(name, root / "artifacts")
    except (FileNotFoundError, ModelFileError, ValueError) as exc:
        raise ServiceError(f"cannot serve {name}: {exc}") from None
    predictor.proba(["a first text, to check the model scores"])  # a broken model fails here, not on a request
    return Served(name, predictor, before, meta, version_of(root, name, predictor.files), _metrics(root, name))


class Watcher(threading.Thread):
    """Swaps in a new version of the served model when its files change and have settled; refreshes the version
    facts when dvc.lock, the metrics or git refs change (a promotion commits and registers after writing files)."""

    def __init__(self, service: "Service") -> None:
        super().__init__(name="reweigh-model-watcher", daemon=True)
        self.service, self.stopping = service, threading.Event()
        self.pending: tuple | None = None
        self.since = 0.0
        self.failed: tuple | None = None

    def run(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one surprise; the service keeps its model
                log.exception("model watcher: check failed; still serving %s", self.service.current.version["version"])

    def check(self) -> None:
        svc, cur = self.service, self.service.current
        name = cur.name if svc.wanted != "best" else _best_or(svc.root, cur.name)
        now = stamp(*model_files(name, svc.root / "artifacts"))
        if name != cur.name or now != cur.files_stamp:
            if now != self.pending:
                self.pending, self.since = now, time.monotonic()  # changed: wait until it stops changing
                return
            if time.monotonic() - self.since < svc.settings.reload_settle or now == self.failed:
                return
            try:
                new = load_served(svc.root, name)
            except Exception as exc:
                self.failed = now
                log.error("model watcher: %s changed but cannot be loaded (%s); still serving %s", name, exc, cur.version["version"])
                return
            svc.current = new  # one attribute: a request sees the old model or the new one, whole
            log.info("model watcher: now serving %s %s (was %s %s)", new.name, new.version["version"], cur.name, cur.version["version"])
        elif _meta_stamp(svc.root) != cur.meta_stamp:
            meta = _meta_stamp(svc.root)
            svc.current = replace(cur, meta_stamp=meta, version=version_of(svc.root, cur.name, cur.predictor.files),
                                  metrics=_metrics(svc.root, cur.name))
            if svc.current.version["version"] != cur.version["version"]:
                log.info("model watcher: %s is version %s (was %s)", cur.name, svc.current.version["version"], cur.version["version"])


def _best_or(root: Path, fallback: str) -> str:
    try:
        return best_model(root)
    except (ServiceError, OSError, ValueError):
        return fallback  # reports/metrics.json being rewritten


# ---------------------------------------------------------------- batching


@dataclass
class Job:
    texts: list[str]
    explain: bool
    top_k: int
    future: asyncio.Future


class Service:
    """The served model and the queue in front of it."""

    def __init__(self, root: Path, wanted: str, settings: ServeParams) -> None:
        import torch

        self.root, self.wanted, self.settings = root.resolve(), wanted, settings
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)  # serve.threads: 1 keeps the event loop a core
        self.current = load_served(self.root, wanted)
        self.queue: asyncio.Queue[Job] | None = None
        # one scoring thread: batches come one after another; two at once would only contend
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="reweigh-score", initializer=_flush_denormals)
        self.watcher = Watcher(self)

    async def score(self, texts: list[str], explain: bool, top_k: int) -> tuple[Served, list[dict]]:
        job = Job(texts, explain, top_k, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def batches(self) -> None:
        """Take what is queued (up to batch_size texts), score it in one go on the scoring thread, answer each."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            n = len(jobs[0].texts)
            while n < self.settings.batch_size and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                n += len(jobs[-1].texts)
            served = self.current  # one version for the whole batch
            try:
                results = await loop.run_in_executor(self.executor, _score_jobs, served.predictor, jobs)
            except Exception as exc:  # reaches each waiting request as a 500, the loop goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, rows in zip(jobs, results):
                if not job.future.done():  # the client may have gone
                    job.future.set_result((served, rows))


def _flush_denormals() -> None:
    import torch

    torch.set_flush_denormal(True)  # per thread: a GRU is several times slower on denormal floats


def _score_jobs(predictor: Predictor, jobs: list[Job]) -> list[list[dict]]:
    """Rows per job: the plain jobs' texts scored as one batch, each job that asks for attention on its own."""
    plain = [j for j in jobs if not j.explain]
    texts = [t for j in plain for t in j.texts]
    rows = iter(predictor.predict(texts, explain=False) if texts else [])
    return [predictor.predict(j.texts, j.top_k, explain=True) if j.explain else [next(rows) for _ in j.texts] for j in jobs]


# ---------------------------------------------------------------- the API


class PredictRequest(BaseModel):
    """One text (`text`) or several (`texts`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "A wonderful, moving film."},
        {"texts": ["A wonderful, moving film.", "Two hours I will never get back."], "explain": True, "top_k": 5}]})
    text: StrictStr | None = Field(None, description="one text to classify")
    texts: list[StrictStr] | None = Field(None, description="several texts to classify, answered in order")
    explain: bool = Field(False, description="also return the tokens an attention model weighed most (slower)")
    top_k: int = Field(8, ge=1, le=100, description="how many tokens `explain` returns per text")

    @model_validator(mode="after")
    def _one_of(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError('send either "text" (one string) or "texts" (a list of strings), not both or neither')
        return self


class TopToken(BaseModel):
    token: str
    position: int
    weight: float


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    top_tokens: list[TopToken] | None = None


class PredictResponse(BaseModel):
    model: str = Field(description="the model that answered")
    version: str = Field(description="its registered version, else its git commit, else md5:<file digest>")
    predictions: list[Prediction]


class ProblemResponse(BaseModel):
    detail: str


class Guard:
    """Pure ASGI middleware: a request body over serve.max_request_mb (413) or a /predict that is not JSON (415)
    is refused before any of it is parsed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["path"] == "/predict" and kind != b"application/json":
            return await _problem(send, 415, f"/predict takes JSON: send Content-Type: application/json "
                                             f"(got {kind.decode(errors='replace') or 'none'})")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _problem(send, 413, self._too_large())
        seen, refused = 0, False

        async def limited():  # a body sent in chunks, without a length, is counted as it arrives
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await _problem(send, 413, self._too_large())
                return {"type": "http.disconnect"}  # the app stops reading; what it would answer is dropped
            return message

        async def unless_refused(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, unless_refused)
        except Exception:
            if not refused:
                raise  # the app's own failure; a refused request's disconnect is expected

    def _too_large(self) -> str:
        return (f"the request body is over {self.max_bytes / 1e6:g} MB (serve.max_request_mb in params.yaml): "
                "send fewer or shorter texts per request")


async def _problem(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(service: Service) -> FastAPI:
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.queue = asyncio.Queue()
        worker = asyncio.create_task(service.batches())
        service.watcher.start()
        log.info("serving %s %s from %s", service.current.name, service.current.version["version"], service.root)
        yield
        service.watcher.stopping.set()
        worker.cancel()
        service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="reweigh", lifespan=lifespan,
                  description="Text classification with a model trained by reweigh (DVC + Prefect + PyTorch).")
    app.add_middleware(Guard, max_bytes=int(settings.max_request_mb * 1e6))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse({"detail": "the body is not valid JSON: send {\"text\": \"...\"} or {\"texts\": [\"...\", ...]}"}, 400)
        said = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {str(e['msg']).removeprefix('Value error, ')}"
                         for e in errors)
        return JSONResponse({"detail": said}, 422)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              responses={400: {"model": ProblemResponse}, 413: {"model": ProblemResponse}, 415: {"model": ProblemResponse},
                         422: {"model": ProblemResponse}})
    async def predict(req: PredictRequest) -> Any:
        """Each text's label and class probabilities (and, with `explain`, the tokens an attention model weighed most)."""
        texts = [req.text] if req.text is not None else req.texts
        if not texts:
            return JSONResponse({"detail": "texts is empty: send at least one text"}, 422)
        if len(texts) > settings.max_texts:
            return JSONResponse({"detail": f"{len(texts)} texts in one request; this service takes at most {settings.max_texts} "
                                           "(serve.max_texts in params.yaml): split them over several requests"}, 413)
        for i, t in enumerate(texts):
            where = "text" if req.text is not None else f"texts[{i}]"
            if not t.strip():
                return JSONResponse({"detail": f"{where} is empty or only whitespace: there is nothing to classify"}, 422)
            if len(t) > settings.max_chars:
                return JSONResponse({"detail": f"{where} has {len(t):,} characters; this service takes at most "
                                               f"{settings.max_chars:,} (serve.max_chars in params.yaml)"}, 413)
        served, rows = await service.score(texts, req.explain, req.top_k)
        return {"model": served.name, "version": served.version["version"],
                "predictions": [{k: v for k, v in r.items() if k != "text"} for r in rows]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Up, and which model version answers."""
        cur = service.current
        return {"status": "ok", "model": cur.name, "version": cur.version["version"]}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The served model: name, version, classes, test metrics and the params it was trained with."""
        cur = service.current
        return {"name": cur.name, "version": cur.version["version"], "registered": cur.version["registered"],
                "commit": cur.version["commit"], "files": cur.version["files"], "classes": cur.predictor.labels,
                "metrics": cur.metrics, "params": cur.version["params"], "chosen_as": "best" if service.wanted == "best" else "named",
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cur.loaded_at))}

    return app


def serve_model(root: Path, settings: ServeParams, access_log: bool = True) -> None:
    """Load the model (or fail, naming the file), then serve it until interrupted."""
    import uvicorn

    service = Service(root, settings.model, settings)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, access_log=access_log, log_level="info")
