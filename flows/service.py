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

A promotion reaches the service by itself (flows/served.py): a watcher checks the model's files every half second and, once a
change has settled (serve.reload_settle), loads the new version beside the old one, scores a text with it, and
swaps it in; requests in flight finish on the old one, none is dropped. Files that cannot be loaded (a half-
written copy) leave the old version serving. Limits (serve.* in params.yaml) turn bad input into a 4xx
that says what to change; the service keeps serving.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults)
import asyncio
import os
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from flows.predict import Predictor
from flows.served import Served, Watcher, load_served
from reweigh.params import ServeParams

log = logging.getLogger("uvicorn.error")  # the server's own log
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
