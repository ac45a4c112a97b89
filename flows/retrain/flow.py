"""retrain: is there anything new? → challenger as a DVC experiment → judged against the champion → promote.

    [dvc pull] → check sources + dvc status → dvc exp run --temp → score both → dvc exp apply → dvc push
                  (nothing new: stop here)                        (worse: keep the champion, flag the run)

- **Anything new?** The adapter's sources are fingerprinted (`python -m flows.sources --check`) and
  compared with the champion's reports/sources.json; `dvc status` shows stages whose code or params
  changed. With neither, and no overrides, the run ends in seconds saying there was nothing new.
- **The challenger** runs as `dvc exp run --temp -n retrain-<time> [-S key=value …]`: a DVC experiment in a
  temporary copy of the project, so the workspace (the champion) is never touched while it trains, and a
  kill at any point leaves the champion as it was. DVC keeps the experiment (`dvc exp show`).
- **The judgement** (flows/retrain/judge.py): both sides' models predict the challenger's test split;
  `retrain.promote` (always | if_not_worse), `promote_metric` and `tolerance` decide.
- **Promoted**: `dvc exp apply` brings the challenger's params, dvc.lock, reports and outputs into the
  workspace, then `dvc push`. **Not promoted**: nothing is applied or pushed; the run ends in a Failed
  state (red in the UI: it needs a person) whose message starts "not promoted:", the reason in its artifact.
  (A custom state name would hide it: the UI's run filters match state names.)
- A failing step stops the flow naming the step and, for the challenger, the DVC stage; one retrain per
  workspace at a time (a lock file under .dvc/tmp). A promotion first sets the champion's files aside
  (.dvc/tmp/reweigh-champion): if it is cut off, the next run restores the champion before anything else.

Served on a cron schedule by `reweigh serve` (flows/serve.py); run once with `reweigh retrain`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from adapters.sources import describe
from flows.retrain import judge
from flows.retrain.commands import (LOCK_FILE, RetrainFailed, _logger, collect_overrides, dvc, dvc_json,  # noqa: F401
                               drop_restore_point, failed_stage, git_identity_env, recover_champion, remote_url,
                               save_restore_point, set_param_arg, workspace_lock)
from reweigh.params import ParamsError, RetrainParams, load_params

REPORT_KEY = "retrain-report"
FAILURE_KEY = "retrain-failure"
ALWAYS_CHANGED = "always changed"


# ---------------------------------------------------------------- the steps


@task(name="dvc pull", cache_policy=NO_CACHE)
def dvc_pull(workdir: Path, remote: str | None) -> None:
    dvc(["pull", *(["-r", remote] if remote else [])], workdir, "pull")


@task(name="anything new?", cache_policy=NO_CACHE)
def check_for_news(workdir: Path) -> dict[str, Any]:
    """{sources: [changed source], stale: [stage whose code, params or outputs are not as dvc.lock says]}."""
    result = subprocess.run([sys.executable, "-m", "flows.sources", "--check"], cwd=workdir, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RetrainFailed("check", f"`python -m flows.sources --check` exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    sources = json.loads(result.stdout)
    logger = _logger()
    for warning in sources["warnings"]:
        logger.warning("%s", warning)
    for change in sources["changed"]:
        logger.info("source %s changed: %s → %s", change["source"], change["old"], change["new"])
    status = dvc_json(["status"], workdir, "check")
    stale = sorted(stage for stage, what in status.items() if what != [ALWAYS_CHANGED])
    if stale:
        logger.info("stages not up to date with dvc.lock: %s", ", ".join(stale))
    return {"sources": sources["changed"], "stale": stale, "current": sources["current"], "declared": sources["declared"]}


@task(name="challenger: dvc exp run --temp", cache_policy=NO_CACHE)
def run_challenger(workdir: Path, name: str, overrides: dict[str, Any], copy_paths: list[str], timeout: float | None) -> str:
    """The pipeline as a DVC experiment in a temporary copy of the project; the command it ran."""
    args = ["exp", "run", "--temp", "-n", name]
    args += [a for k, v in overrides.items() for a in ("-S", set_param_arg(k, v))]
    args += [a for p in copy_paths for a in ("-C", p)]
    dvc(args, workdir, "challenger", env=git_identity_env(), timeout=timeout)
    return "dvc " + " ".join(args)


@task(name="champion vs challenger", cache_policy=NO_CACHE)
def compare(workdir: Path, name: str, rule: str, metric: str, tolerance: float) -> dict[str, Any]:
    """What changed (sources, rows, metrics) and the decision, both sides scored on the newest test split."""
    metrics = judge.metrics_files(workdir)
    tracked = metrics + [judge.SOURCES]
    challenger = judge.challenger_side(workdir, judge.experiment_rev(workdir, name), tracked)
    champion = judge.champion_side(workdir, tracked)
    cache = judge.cache_dir(workdir)
    new_table = judge.cached_file(workdir, cache, challenger, judge.INGESTED)
    if new_table is None:
        raise RetrainFailed("compare", f"the experiment {name} has no {judge.INGESTED} in the DVC cache")
    old_table = (judge.cached_file(workdir, cache, champion, judge.INGESTED) or workdir / judge.INGESTED) if champion else None
    scratch = workdir / ".dvc" / "tmp" / "reweigh-judge"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        texts, labels = judge.newest_test_split(new_table)
        scores: dict[str, Any] = {"challenger": judge.score(judge.materialise(workdir, cache, challenger, scratch / "challenger"), texts, labels)}
        champion_models = judge.materialise(workdir, cache, champion, scratch / "champion") if champion else None
        scores["champion"] = judge.score(champion_models, texts, labels) if champion_models else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from flows.sources import changes as source_changes

    decision = judge.decide(rule, metric, tolerance, scores["champion"], scores["challenger"])
    return {
        "decision": decision,
        "scores": scores,
        "test_rows": len(texts),
        "rows": judge.data_rows(judge.split_label_counts(old_table), judge.split_label_counts(new_table)),
        "sources": source_changes(json.loads(champion.files[judge.SOURCES]) if champion and judge.SOURCES in champion.files else None,
                                  json.loads(challenger.files.get(judge.SOURCES, "{}"))),
        "metrics": judge.metric_changes(champion, challenger, metrics),
    }


@task(name="promote: dvc exp apply + push", cache_policy=NO_CACHE)
def promote_challenger(workdir: Path, name: str, push: bool, remote: str | None) -> str | None:
    """Apply the challenger to the workspace and push it; the remote's URL when pushed.

    The champion's files are set aside first, and dropped only once everything succeeded: a run killed in
    between leaves the restore point, and the next retrain puts the champion back before anything else."""
    save_restore_point(workdir)
    dvc(["exp", "apply", name], workdir, "promote", env=git_identity_env())
    pushed_to = None
    if push:
        dvc(["push", *(["-r", remote] if remote else [])], workdir, "push")
        pushed_to = remote_url(workdir, remote)
    drop_restore_point(workdir)
    return pushed_to


def local_copy_paths(workdir: Path, sources: list[str]) -> list[str]:
    """The `-C` paths of `dvc exp run --temp` that put the relative sources inside the project into its temp copy.

    That copy holds only what git tracks (DVC checks its outputs out after copying), and DVC copies a file
    with shutil.copy (its folder must be there already) and a folder with shutil.copytree (it must not be
    there yet). So for each untracked file of a source (the file, or every file under a folder) this names
    the shallowest ancestor holding nothing git tracks, or the file itself when git tracks its folder.
    Shallowest, so no path lies inside another. Tracked files are there already; absolute paths and URLs
    are read where they are.
    """
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=workdir, capture_output=True, text=True, check=True).stdout
    tracked = {Path(name) for name in listed.split("\0") if name}
    tracked_folders = {folder for name in tracked for folder in name.parents}
    out: set[str] = set()
    for source in sources:
        rel = Path(os.path.normpath(source))
        if "://" in source or rel.is_absolute() or rel.parts[:1] in ((), ("..",)) or not (workdir / rel).exists():
            continue
        where = workdir / rel
        files = [rel] if where.is_file() else [f.relative_to(workdir) for f in where.rglob("*") if f.is_file()]
        for file in files:
            if file not in tracked:
                top_down = (Path(*file.parts[:n]) for n in range(1, len(file.parts) + 1))
                out.add(next(p for p in top_down if p not in tracked_folders).as_posix())
    return sorted(out)


# ---------------------------------------------------------------- the artifact


def _num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _change(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return f"{new - old:+.4g}"
    return ""


def summary_line(outcome: str, result: dict[str, Any] | None) -> str:
    """One line for the log and the artifact's first line."""
    if outcome == "nothing new":
        return "nothing new: the sources are unchanged and every stage is up to date; the champion stays"
    rows = result["rows"]
    added = sum(after - before for _, _, before, after in rows)
    by_split: dict[str, int] = {}
    for split, _, before, after in rows:
        by_split[split] = by_split.get(split, 0) + after - before
    data = f"{added:+,} rows (" + ", ".join(f"{s} {n:+,}" for s, n in by_split.items() if n) + ")" if added or any(by_split.values()) else "no row count changed"
    d = result["decision"]
    judged = f"{d.challenger[0]} {d.metric} {d.challenger[1]:.4f}" + (f" vs champion {d.champion[0]} {d.champion[1]:.4f}" if d.champion else "")
    return f"{outcome}: {data}; {judged}; {len(result['metrics'])} metric value(s) changed"


def report_markdown(root: Path, outcome: str, summary: str, news: dict[str, Any], result: dict[str, Any] | None,
                    ran: str | None, name: str | None, overrides: dict[str, Any], rule: str, metric: str, tolerance: float,
                    pushed_to: str | None, timings: dict[str, float]) -> str:
    title = {"promoted": "promoted", "not promoted": "NOT promoted", "nothing new": "nothing new"}[outcome]
    lines = [f"# Retrain `{flow_run.get_name() or 'local'}`: {title}", "", f"**{summary}**", ""]
    if result:
        d = result["decision"]
        lines += ["## Decision", "",
                  f"- rule: `retrain.promote: {rule}`, by the best neural model's `{metric}`, tolerance {tolerance}",
                  f"- {'promoted' if d.promote else 'not promoted'}: {d.reason}",
                  f"- scored on the same {result['test_rows']:,} test rows (the new data's test split), with the same code", "",
                  "| model | champion accuracy | champion macro F1 | challenger accuracy | challenger macro F1 |", "|---|---|---|---|---|"]
        champ = result["scores"]["champion"] or {}
        for model, s in result["scores"]["challenger"].items():
            c = champ.get(model, {})
            lines.append(f"| {model} | {_num(c.get('accuracy'))} | {_num(c.get('macro_f1'))} | {_num(s['accuracy'])} | {_num(s['macro_f1'])} |")
        if not d.promote:
            lines += ["", f"The champion stays: the workspace and the DVC remote were not touched. The challenger is the "
                          f"DVC experiment `{name}`: `dvc exp show`, `dvc exp diff {name}`. To promote it anyway: "
                          f"`dvc exp apply {name} && dvc push` (then commit), or rerun with `promote=always`."]
        lines += ["", "## What changed in the data", ""]
        lines += [f"- source `{c['source']}`: {c['old']} → {c['new']}" for c in result["sources"]] or ["- no source changed"]
        lines += ["", "| split | label | rows before | rows after | change |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {lab} | {b:,} | {a:,} | {a - b:+,} |" for s, lab, b, a in result["rows"]]
        lines += ["", "## Metrics that changed: champion (old) → challenger (new)", "",
                  "| file | metric | old | new | change |", "|---|---|---|---|---|"]
        lines += [f"| {f} | {m} | {_num(o)} | {_num(n)} | {_change(o, n)} |" for f, m, o, n in result["metrics"]] or ["| — | no metric changed | | | |"]
    else:
        lines += ["- sources: " + ("; ".join(describe(fp) for fp in news["current"].get("sources", [])) or "none declared")]
    reports = root / "reports"
    lines += ["", "## Run", "", f"- workspace: `{root}`",
              f"- report: `{reports / 'report.md'}`",
              f"- overrides: {', '.join(f'`{k}={v}`' for k, v in overrides.items()) or 'none (params.yaml as it is)'}"]
    if ran:
        lines.append(f"- ran: `{ran}` (experiment `{name}`)")
    lines.append(f"- pushed to DVC remote: `{pushed_to}`" if pushed_to else "- not pushed")
    lines.append("- steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------- the flow


def accelerator() -> str:
    """What training will use where train.device is auto (the worker's GPU when it has one)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu (torch missing)"
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def _settings(root: Path) -> RetrainParams:
    try:
        return load_params(root / "params.yaml").retrain
    except ParamsError as exc:
        raise RetrainFailed("parameters", str(exc)) from None


@flow(name="retrain", log_prints=True)
def retrain_flow(
    workdir: str | None = None,
    overrides: dict[str, Any] | None = None,
    dataset: str | None = None,
    epochs: int | None = None,
    embedding_dim: int | None = None,
    hidden_size: int | None = None,
    vocab_size: int | None = None,
    device: str | None = None,
    pull: bool = False,
    push: bool = True,
    remote: str | None = None,
    promote: str | None = None,
    promote_metric: str | None = None,
    tolerance: float | None = None,
    lock_timeout: float = 600.0,
    stage_timeout: float | None = None,
) -> dict[str, Any]:
    """Retrain the pipeline in `workdir` (default: the current directory, the project root).

    overrides: params.yaml keys → values, e.g. {"tokenize.vocab_size": 8000, "train.lr": 0.001}; they and
    the named parameters (dataset → dataset.name, epochs → train.epochs, embedding_dim / hidden_size →
    every model, vocab_size → tokenize.vocab_size, device → train.device) are set in the challenger.
    promote: always | if_not_worse; promote_metric: accuracy | macro_f1; tolerance: how much worse the
    challenger may be (default: retrain.* in params.yaml).
    pull / push: `dvc pull` before and `dvc push` after a promotion (to `remote`, else the default remote).
    """
    root = Path(workdir or os.environ.get("REWEIGH_WORKDIR") or Path.cwd()).resolve()
    logger = _logger()
    if not (root / "dvc.yaml").exists():
        raise RetrainFailed("setup", f"{root} has no dvc.yaml: pass workdir= the project root")
    timings: dict[str, float] = {}
    step = "parameters"
    ran = name = pushed_to = result = None
    try:
        settings = _settings(root)
        rule = promote or settings.promote
        metric = promote_metric or settings.promote_metric
        tol = settings.tolerance if tolerance is None else tolerance
        if rule not in ("always", "if_not_worse") or metric not in ("accuracy", "macro_f1"):
            raise RetrainFailed("parameters", f"promote={rule!r} / promote_metric={metric!r}: use always | if_not_worse and accuracy | macro_f1")
        changes = collect_overrides(root, overrides or {}, {"dataset": dataset, "epochs": epochs, "embedding_dim": embedding_dim,
                                                            "hidden_size": hidden_size, "vocab_size": vocab_size, "device": device})
        logger.info("workspace %s; overrides %s; promote %s by %s (tolerance %s); training on %s",
                    root, changes or "none", rule, metric, tol, accelerator())
        with workspace_lock(root, lock_timeout):
            step = "recover"
            if recover_champion(root):
                timings["recover"] = 0.0  # shown in the artifact: this run first undid a cut-off promotion
            if pull:
                step, started = "pull", time.perf_counter()
                dvc_pull(root, remote)
                timings["pull"] = time.perf_counter() - started
            step, started = "check", time.perf_counter()
            news = check_for_news(root)
            timings["check"] = time.perf_counter() - started
            if not changes and not news["sources"] and not news["stale"]:
                outcome = "nothing new"
            else:
                step, started = "challenger", time.perf_counter()
                name = f"retrain-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
                ran = run_challenger(root, name, changes, local_copy_paths(root, news["declared"]), stage_timeout)
                timings["challenger"] = time.perf_counter() - started
                step, started = "compare", time.perf_counter()
                result = compare(root, name, rule, metric, tol)
                timings["compare"] = time.perf_counter() - started
                outcome = "promoted" if result["decision"].promote else "not promoted"
                if result["decision"].promote:
                    step, started = "promote", time.perf_counter()
                    pushed_to = promote_challenger(root, name, push, remote)
                    timings["promote"] = time.perf_counter() - started
    except RetrainFailed as exc:
        _publish_failure(exc, root)
        raise
    except Exception as exc:  # anything unexpected still says which step it broke
        failure = RetrainFailed(step, f"{type(exc).__name__}: {exc}")
        _publish_failure(failure, root)
        raise failure from exc
    summary = summary_line(outcome, result)
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=report_markdown(root, outcome, summary, news, result, ran, name, changes, rule, metric, tol, pushed_to, timings),
        description=f"Retrain: {summary}",
    )
    if result:
        for file, metric_name, old, new in result["metrics"]:
            logger.info("%s %s: %s → %s", file, metric_name, _num(old), _num(new))
    print(f"retrain: {summary} ({sum(timings.values()):.1f} s)")
    out = {"workdir": str(root), "outcome": outcome, "summary": summary, "experiment": name, "command": ran,
           "overrides": changes, "timings": timings, "pushed_to": pushed_to,
           "metrics": [list(m) for m in result["metrics"]] if result else []}
    if outcome == "not promoted":
        return Failed(message=f"not promoted: {result['decision'].reason}. The champion stays; "
                                                  f"the challenger is DVC experiment {name}.")
    return out


def _publish_failure(exc: RetrainFailed, root: Path) -> None:
    with contextlib.suppress(Exception):
        create_markdown_artifact(
            key=FAILURE_KEY,
            markdown=f"# Retrain `{flow_run.get_name() or 'local'}`: FAILED at step `{exc.step}`"
                     + (f", DVC stage `{exc.stage}`" if exc.stage else "")
                     + f"\n\n- workspace: `{root}`\n\n```\n{exc.detail[-4000:]}\n```\n",
            description=f"Retrain failed at {exc.step}" + (f" ({exc.stage})" if exc.stage else ""),
        )


if __name__ == "__main__":
    retrain_flow()
