"""retrain: is there anything new? → challenger as a DVC experiment → judged against the champion → promote.

    [dvc pull] → check sources + dvc status → drift → dvc exp run --temp → score both → dvc exp apply → dvc push
                  (nothing new: stop here)   (blocked: stop)               (worse: keep the champion, flag the run)

- **Anything new?** The adapter's sources are fingerprinted (`python -m flows.sources --check`) and
  compared with the champion's reports/sources.json; `dvc status` shows stages whose code or params
  changed. With neither, and no overrides, the run ends in seconds saying there was nothing new.
- **Drift** (flows/retrain/drift.py): the new data against the champion's, in seconds: label shares, text
  lengths, unknown tokens, near copies and label conflicts; each warns, or blocks the run when listed in
  retrain.drift.block.
- **The challenger** runs as `dvc exp run --temp -n retrain-<time> [-S key=value …]`: a DVC experiment in a
  temporary copy of the project, so the workspace (the champion) is never touched while it trains, and a
  kill at any point leaves the champion as it was. DVC keeps the experiment (`dvc exp show`).
- **The judgement** (flows/retrain/judge.py): both sides' models predict the challenger's test split and
  the reference set; `retrain.promote` (always | if_not_worse), `promote_metric`, `tolerance` and
  `significance` decide. Each run is tagged with its outcome (the UI's run list shows tags).
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

from flows.retrain import judge, versions
from flows.retrain.artifact import champion_version, number, report_markdown, summary_line
from flows.retrain.commands import (RetrainFailed, _logger, collect_overrides, dvc, dvc_json, drop_restore_point,
                                    git_identity_env, recover_champion, remote_url, save_restore_point, set_param_arg,
                                    workspace_lock)
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


@task(name="drift: champion's data vs the new data", cache_policy=NO_CACHE)
def check_drift(workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """flows/retrain/drift.py's checks, in the project root (where the sources are read from); seconds."""
    result = subprocess.run([sys.executable, "-m", "flows.retrain.drift", "--overrides", json.dumps(overrides)], cwd=workdir,
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RetrainFailed("drift", f"`python -m flows.retrain.drift` exited {result.returncode}: {result.stderr.strip()[-3000:]}")
    found = json.loads(result.stdout)
    logger = _logger()
    for entry in found["checks"]:
        if not entry["ok"]:
            log = logger.error if entry["action"] == "block" else logger.warning
            log("drift check %s failed (%s): %s; %s. What to change: %s", entry["check"], entry["action"], "; ".join(entry["found"]),
                entry["detail"], entry["fix"])
            for row in entry["sample_rows"][:5]:
                log("    %s", row)
        else:
            logger.info("drift check %s passed: %s", entry["check"], entry["detail"])
    return found


@task(name="challenger: dvc exp run --temp", cache_policy=NO_CACHE)
def run_challenger(workdir: Path, name: str, overrides: dict[str, Any], copy_paths: list[str], timeout: float | None) -> str:
    """The pipeline as a DVC experiment in a temporary copy of the project; the command it ran."""
    args = ["exp", "run", "--temp", "-n", name]
    args += [a for k, v in overrides.items() for a in ("-S", set_param_arg(k, v))]
    args += [a for p in copy_paths for a in ("-C", p)]
    dvc(args, workdir, "challenger", env=git_identity_env(), timeout=timeout)
    return "dvc " + " ".join(args)


@task(name="champion vs challenger", cache_policy=NO_CACHE)
def compare(workdir: Path, name: str, rule: str, metric: str, tolerance: float, significance: float,
            reference: str | None) -> dict[str, Any]:
    """What changed (sources, rows, metrics) and the decision: both sides' models scored on the newest test
    split and on the reference set (retrain.reference, else the champion's own test split)."""
    tracked = judge.metrics_files(workdir) + [judge.SOURCES]
    challenger = judge.challenger_side(workdir, judge.experiment_rev(workdir, name), tracked)
    champion = judge.champion_side(workdir, tracked)
    scratch = workdir / ".dvc" / "tmp" / "reweigh-judge"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        new_table = judge.ingested_table(workdir, challenger, scratch / "challenger")
        if new_table is None:
            raise RetrainFailed("compare", f"the experiment {name} has no {judge.INGESTED} (dvc.api.DVCFileSystem at {challenger.rev})")
        old_table = judge.ingested_table(workdir, champion, scratch / "champion") if champion else None
        sets = {"new test split": judge.newest_test_split(new_table)}
        if reference:
            sets["reference set"] = judge.read_reference(workdir / reference)
        elif old_table is not None:
            sets["reference set"] = judge.newest_test_split(old_table)  # the test rows the champion was judged on
        texts = [t for rows, _ in sets.values() for t in rows]  # every set predicted in one pass per side
        predicted = {"challenger": judge.predictions(judge.materialise(workdir, challenger, scratch / "challenger"), texts)}
        champion_models = judge.materialise(workdir, champion, scratch / "champion") if champion else None
        predicted["champion"] = judge.predictions(champion_models, texts) if champion_models else None
        rows = judge.data_rows(judge.split_label_counts(old_table), judge.split_label_counts(new_table))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from flows.sources import changes as source_changes

    judgements, start = [], 0
    for set_name, (_, labels) in sets.items():
        part = {side: {m: p[start:start + len(labels)] for m, p in found.items()} if found else None
                for side, found in predicted.items()}
        start += len(labels)
        judgements.append(judge.judge_set(set_name, labels, metric, tolerance, significance, part["champion"], part["challenger"]))
    decision = judge.decide(rule, metric, judgements)
    return {
        "decision": decision,
        "scores": judgements[0].scores,
        "test_rows": len(sets["new test split"][1]),
        "reference": reference or "the champion's test split",
        "rows": rows,
        "sources": source_changes(json.loads(champion.files[judge.SOURCES]) if champion and judge.SOURCES in champion.files else None,
                                  json.loads(challenger.files.get(judge.SOURCES, "{}"))),
        "metrics": judge.metric_changes(workdir, challenger),
    }


@task(name="promote: dvc exp apply + push + version", cache_policy=NO_CACHE)
def promote_challenger(workdir: Path, name: str, push: bool, remote: str | None, version: bool,
                       reason: str) -> tuple[str | None, dict[str, str] | None]:
    """Apply the challenger to the workspace, push it, commit it and register it as a version (GTO);
    (the remote's URL when pushed, {version, commit, previous} when versioned).

    The champion's files are set aside first, and dropped once the promotion is committed: a run killed in
    between leaves the restore point, and the next retrain puts the champion back before anything else.
    The champion is committed and registered first when it is not yet a version, so there is one to roll back to."""
    previous = versions.version_champion(workdir, f"the champion before retrain {name}")[0] if version else None
    save_restore_point(workdir)
    dvc(["exp", "apply", name], workdir, "promote", env=git_identity_env())
    pushed_to = None
    if push:
        dvc(["push", *(["-r", remote] if remote else [])], workdir, "push")
        pushed_to = remote_url(workdir, remote)
    if not version:
        drop_restore_point(workdir)
        return pushed_to, None
    message = f"retrain {name}: promoted; {reason}"
    rev = versions.commit(workdir, message)
    drop_restore_point(workdir)
    return pushed_to, {"version": versions.register(workdir, rev, message), "commit": rev, "previous": previous}


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


def tag_run(outcome: str) -> None:
    """Tag the flow run with its outcome (promoted, not-promoted, blocked, nothing-new): the deployment's run
    list in the Prefect UI shows tags, so each run is recognisable without opening it."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    from prefect.client.orchestration import get_client

    with contextlib.suppress(Exception), get_client(sync_client=True) as client:  # a label, never a reason to fail
        tags = set(flow_run.get_tags() or ()) | {outcome.replace(" ", "-")}
        client.update_flow_run(run_id, tags=sorted(tags))


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
    step, outcome = "parameters", ""
    ran = name = pushed_to = result = drift = version = None
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
                step, started = "drift", time.perf_counter()
                drift = check_drift(root, changes)
                timings["drift"] = time.perf_counter() - started
            if drift is not None and drift["blocked"]:
                outcome = "blocked"
            elif outcome != "nothing new":
                step, started = "challenger", time.perf_counter()
                name = f"retrain-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
                ran = run_challenger(root, name, changes, local_copy_paths(root, news["declared"]), stage_timeout)
                timings["challenger"] = time.perf_counter() - started
                step, started = "compare", time.perf_counter()
                result = compare(root, name, rule, metric, tol, settings.significance, settings.reference)
                timings["compare"] = time.perf_counter() - started
                outcome = "promoted" if result["decision"].promote else "not promoted"
                if result["decision"].promote:
                    step, started = "promote", time.perf_counter()
                    pushed_to, version = promote_challenger(root, name, push, remote, settings.version, result["decision"].reason)
                    timings["promote"] = time.perf_counter() - started
    except RetrainFailed as exc:
        _publish_failure(exc, root)
        raise
    except Exception as exc:  # anything unexpected still says which step it broke
        failure = RetrainFailed(step, f"{type(exc).__name__}: {exc}")
        _publish_failure(failure, root)
        raise failure from exc
    summary = summary_line(outcome, result, drift)
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=report_markdown(root, outcome, summary, news, result, ran, name, changes, rule, metric, tol, pushed_to, timings, drift,
                                 version or champion_version(root)),
        description=f"Retrain: {summary}",
    )
    tag_run(outcome)
    if result:
        for file, metric_name, old, new in result["metrics"]:
            logger.info("%s %s: %s → %s", file, metric_name, number(old), number(new))
    print(f"retrain: {summary} ({sum(timings.values()):.1f} s)")
    out = {"workdir": str(root), "outcome": outcome, "summary": summary, "experiment": name, "command": ran,
           "overrides": changes, "timings": timings, "pushed_to": pushed_to,
           "metrics": [list(m) for m in result["metrics"]] if result else [],
           "drift": drift, "version": version}
    if outcome == "blocked":
        return Failed(message=f"blocked: drift check(s) {', '.join(drift['blocked'])} failed (retrain.drift.block); "
                              f"no challenger was trained and the champion stays. The retrain-report artifact shows what was found.")
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
