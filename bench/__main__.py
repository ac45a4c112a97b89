"""`python -m bench [--quick] [--archive PATH] [--out reports/]` → reports/bench.json + reports/bench.md.

Benchmarks report; they assert nothing about time. Sections: clean, tokenize, train, pipeline, accuracy,
pretrain, ablations, and on request datasets, serving and scale (see docs/benchmarks.md). Every measured item runs in a fresh child process (peak RSS of its own).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

SECTIONS = ("clean", "tokenize", "train", "pipeline", "accuracy", "pretrain", "ablations", "datasets", "serving", "scale")
# on request: datasets (two more dvc repro runs, on IMDB 10.5 minutes here), serving (a service per model; full
# mode reads the workspace's finished run) and scale (the data stages on up to millions of documents)
DEFAULT_SECTIONS = SECTIONS[:-3]
QUICK_STAGE_MODELS = ("gru",)  # --quick: the neural models the pipeline, pretrain and accuracy sections train


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few thousand reviews, small pipeline params: minutes")
    ap.add_argument("--archive", help="aclImdb_v1.tar.gz (default: $REWEIGH_IMDB_ARCHIVE, then params.yaml "
                                      "dataset.options.archive, then the adapter's cached official download)")
    ap.add_argument("--out", default="reports", help="where bench.json and bench.md go (default: reports/)")
    ap.add_argument("--limit", type=int, default=1000, help="--quick: reviews per split (train, test, unsup)")
    ap.add_argument("--repro-epochs", type=int, default=1,
                    help="train.epochs for the cold dvc repro (0: params.yaml as it is; default 1, the accuracy "
                         "section reads the workspace's full run)")
    ap.add_argument("--train-limit", type=int,
                    help="pretrain section: labelled training reviews of its few-labels runs (default 1000; --quick: --limit / 10)")
    ap.add_argument("--ablation-epochs", type=int,
                    help="ablations section: at most this many epochs per variant (default: params.yaml's cap, patience "
                         "decides; --quick: 2). On this CPU a full-IMDB Transformer epoch takes minutes: 1 gives seconds per epoch")
    ap.add_argument("--datasets-per-split", type=int, default=5000,
                    help="datasets section: rows per split (train, test, unsup) of the IMDB ratings table (0: all; --quick: --limit)")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but datasets, serving and scale)")
    ap.add_argument("--models", help="serving section: comma-separated models to serve and score (default: every "
                    "model in reports/metrics.json)")
    ap.add_argument("--scale-sizes", help="scale section: comma-separated corpus sizes in documents (default "
                    "100000,1000000; --quick: 2000,10000); add 5000000 for the five-million run")
    ap.add_argument("--scale-in-memory-max", type=int, default=1_000_000,
                    help="scale section: largest size at which the in-memory baseline also runs (default 1,000,000: it "
                         "holds the whole corpus)")
    ap.add_argument("--scale-train", type=int, default=0,
                    help="scale section: also one GRU training epoch on this many labelled documents (e.g. 1000000; default 0: off)")
    ap.add_argument("--scale-pretrain", action="store_true",
                    help="scale section: the pretrain stage too at every size, after tokenize (with the language model: as long as a training epoch)")
    ap.add_argument("--scale-upto", choices=("ingest", "clean", "tokenize"), default="tokenize",
                    help="scale section: the last data stage to run (default tokenize; ingest: ingest alone)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (printed at the end)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="reweigh-bench-prefect-"))
    import reweigh  # noqa: F401  (offline, quiet library defaults)
    from bench import ablations, accuracy, clean, datasets, pipeline, pretrain, report, scale, serving, tokenize, train
    from bench.common import ROOT, git_commit, machine, now_utc
    from bench.data import load_reviews, resolve_archive
    from reweigh.params import load_params
    from reweigh.prefect_server import prefect_server

    started = time.perf_counter()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    p = load_params(ROOT / "params.yaml")
    archive = resolve_archive(args.archive, (p.dataset.options or {}).get("archive"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="reweigh-bench-"))
    mode = "quick" if args.quick else "full"
    limit = args.limit if args.quick else 0

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    log(f"{mode} mode; working directory {work}; loading reviews from {archive or 'the cached official download'}")
    df = load_reviews(archive, limit, p.seed)
    df.write_parquet(work / "raw.parquet")
    splits = dict(sorted(df.group_by("split").len().iter_rows()))
    del df
    result: dict = {"meta": {"date": now_utc(), "mode": mode, "machine": machine(p.train.threads), "git": git_commit(),
                             "archive": archive, "documents": sum(splits.values()), "splits": splits,
                             "sections": wanted}}

    if args.quick:  # the pretrained embedding and encoder must fit the quick models; one neural model and
        # one baseline in the stage runs (the train section still measures both GRUs): a stage process costs
        # 10-20 s of imports and start-up on a small project, and the pretrain section repeats them four times
        repro = {"dataset": {"limit": args.limit, "options": {"verify_counts": False}},
                 "train": {"epochs": 1, "models": list(QUICK_STAGE_MODELS)}, "baseline": {"models": ["tfidf_lr"]},
                 "pretrain": {"dim": train.QUICK_MODELS["gru"]["embedding_dim"],
                              "hidden_size": train.QUICK_MODELS["gru"]["hidden_size"]},
                 "model": json.loads(json.dumps(train.QUICK_MODELS))}
    else:
        repro = {"train": {"epochs": args.repro_epochs}} if args.repro_epochs else {}
    if archive:
        repro.setdefault("dataset", {}).setdefault("options", {})["archive"] = archive
    # The ablation trains as params.yaml says (patience decides the epochs); --quick: the quick params.
    ablation = repro if args.quick else {"dataset": {"options": {"archive": archive}}} if archive else {}
    train_limit = args.train_limit or (args.limit // 10 if args.quick else 1000)

    def reproduced():
        """--quick: the pipeline section's project, reproduced with the params the pretrain section starts from."""
        stages = result.get("pipeline", {}).get("stages")
        project = work / "pipeline" / "project"
        if not args.quick or "error" in result.get("pipeline", {"error": "not run"}) or not stages:
            return None
        return project, stages

    steps = {
        "clean": lambda: clean.run(work, list(p.clean.steps), args.quick),
        "tokenize": lambda: tokenize.run(work, p.tokenize.model_dump(), args.quick),
        "train": lambda: train.run(work, p, args.quick),
        "pipeline": lambda: pipeline.run(work, archive, repro),
        "accuracy": lambda: accuracy.run(ROOT, work / "pipeline" / "project", not args.quick),
        "pretrain": lambda: pretrain.run(work, archive, ablation, train_limit, reuse=reproduced()),
        # --quick: the pipeline section's project was reproduced with these very params (ablation is repro)
        "ablations": lambda: ablations.section(work, archive, ablation, args.ablation_epochs or (2 if args.quick else None),
                                               out_dir, reuse=work / "pipeline" / "project" if args.quick else None),
        "datasets": lambda: datasets.run(work, archive, ablation, args.limit if args.quick else args.datasets_per_split,
                                         train_limit, p.seed),
        # full: the workspace's own run (make repro first); --quick: the pipeline section's project
        "serving": lambda: serving.run(work / "pipeline" / "project" if args.quick else ROOT, work, args.quick, p.seed,
                                     args.models.split(",") if args.models else None),
        "scale": lambda: scale.run(work, [int(x) for x in (args.scale_sizes or ("2000,10000" if args.quick else "100000,1000000")).split(",")],
                                   args.scale_in_memory_max, pipeline.PREFECT_API["url"], args.scale_train, args.scale_pretrain,
                                   args.scale_upto),
    }
    def write(final: bool) -> str:
        result["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        result["meta"]["bench_seconds"] = round(time.perf_counter() - started, 1)
        result["meta"]["complete"] = final
        (out_dir / "bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        try:
            md = report.render(json.loads(json.dumps(result, default=str)))
        except Exception as exc:  # a rendering slip must not cost a long run its figures (bench.json is written)
            traceback.print_exc()
            md = f"# reweigh benchmarks\n\nbench.md could not be rendered ({type(exc).__name__}: {exc}); see bench.json\n"
            result["meta"]["render_error"] = f"{type(exc).__name__}: {exc}"
        (out_dir / "bench.md").write_text(md + "\n")
        return md

    needs = {"tokenize": "clean", "train": "tokenize"}
    server = contextlib.ExitStack()  # the sections that run `dvc repro` share one Prefect server, as make repro does
    if {"pipeline", "pretrain", "ablations", "datasets", "scale"} & set(wanted):
        pipeline.PREFECT_API["url"] = server.enter_context(prefect_server(work / "prefect-server"))
    with server:
        for name in SECTIONS:
            if name not in wanted:
                continue
            if name in needs and "error" in result.get(needs[name], {"error": "not run"}):
                result[name] = {"error": f"needs the {needs[name]} section, which did not complete"}
                continue
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                result[name] = steps[name]()
            except Exception as exc:  # one failed section must not lose the others
                traceback.print_exc()
                result[name] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
            result[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
            log(f"{name} done in {result[name]['section_seconds']} s")
            write(final=False)  # a long run leaves what it has measured so far

    if "pipeline" in result and "project" in result["pipeline"] and not args.keep:
        result["pipeline"].pop("project")
    print(write(final=True))
    if args.keep:
        log(f"working directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")
    return 1 if any("error" in result.get(s, {}) for s in wanted) else 0


if __name__ == "__main__":
    sys.exit(main())
