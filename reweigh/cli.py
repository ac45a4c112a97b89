"""`reweigh`: the command-line tool. Each command is a thin door into a module that does the work."""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

import reweigh  # noqa: F401  (offline defaults)

app = typer.Typer(help="Train and compare text classifiers reproducibly (DVC + Prefect + PyTorch).", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Train and compare text classifiers reproducibly (DVC + Prefect + PyTorch)."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(reweigh.__version__)


@app.command("predict")
def predict_command(
    texts: list[str] = typer.Argument(None, help="texts to classify"),
    file: Path = typer.Option(None, "--file", "-f", help="a .txt file (one text per line), or a table to score in bulk: .csv, .tsv, .parquet, .jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="bulk: the table's text column"),
    out: Path = typer.Option(None, "--out", "-o", help="bulk: write the table with predictions here (.parquet, .csv, .tsv, .jsonl)"),
    batch_rows: int | None = typer.Option(None, "--batch-rows", help="bulk: rows read, scored and written at a time (default 16384)"),
    model: str = typer.Option("gru_attention", "--model", "-m", help="gru_attention, gru, cnn, transformer (when trained), a baseline (tfidf_lr, nbsvm) or ensemble"),
    top: int = typer.Option(8, "--top", help="tokens to show for the attention model"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of readable lines"),
) -> None:
    """Classify text with the trained model; for the attention model, show the tokens it weighed most.
    With --file TABLE --out OUT, score a whole table in bulk (flows/bulk.py)."""
    from flows import predict

    argv = [*(texts or []), "--model", model, "--top", str(top)]
    if file:
        argv += ["--file", str(file), "--text-column", text_column, *(["--batch-rows", str(batch_rows)] if batch_rows else [])]
    if out:
        argv += ["--out", str(out)]
    if as_json:
        argv.append("--json")
    predict.main(argv)


@app.command("serve-model")
def serve_model_command(
    model: str | None = typer.Option(None, "--model", "-m", help="best (highest validation accuracy), a neural model, a baseline or ensemble; default: serve.model in params.yaml"),
    host: str | None = typer.Option(None, "--host", help="address to bind; default: serve.host (127.0.0.1, this machine only)"),
    port: int | None = typer.Option(None, "--port", "-p", help="default: serve.port (8000)"),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="log every request"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root (artifacts/, reports/, params.yaml)"),
) -> None:
    """Serve a trained model over HTTP: POST /predict, GET /health, GET /model, docs at /docs (flows/service.py)."""
    from pydantic import ValidationError

    from flows.served import ServiceError
    from flows.service import serve_model
    from reweigh.params import ServeParams, load_params

    try:
        settings = load_params(workdir / "params.yaml").serve if (workdir / "params.yaml").exists() else ServeParams()
        given = {k: v for k, v in {"model": model, "host": host, "port": port}.items() if v is not None}
        settings = ServeParams.model_validate(settings.model_dump() | given)
        serve_model(workdir, settings, access_log)
    except ValidationError as exc:  # ServeParams' own checks of the flags
        _fail_plain(ValueError("; ".join(f"--{e['loc'][0]}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())))
    except (ServiceError, ValueError) as exc:  # ParamsError too
        _fail_plain(exc)


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro_command(ctx: typer.Context) -> None:
    """`dvc repro [ARGS]` with one Prefect server for all its stages, not a temporary API per stage (what `make repro` runs)."""
    from reweigh.prefect_server import repro

    raise typer.Exit(repro(list(ctx.args)))


@app.command("summary")
def summary_command(
    report: Path = typer.Option(Path("reports/report.md"), "--report", help="the report to summarise"),
) -> None:
    """Each model's test accuracy and macro F1 with CIs, the verdict, and where the report is (what `make repro` ends with)."""
    from reweigh.summary import summary

    try:
        typer.echo(summary(report))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"reweigh summary: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("adapters")
def list_adapters(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml whose dataset.name is marked as selected"),
) -> None:
    """List every dataset adapter found (built-in, local in adapters/, plugin) with its labels."""
    from rich.console import Console
    from rich.table import Table

    from adapters.base import AdapterError
    from adapters.inspection import describe_adapters
    from reweigh.params import ParamsError, load_params

    console = Console()
    selected, options = None, None
    if params_file.exists():
        try:
            dataset = load_params(params_file).dataset
            selected, options = dataset.name, dataset.options
        except ParamsError as exc:
            console.print(f"[yellow]{params_file} not read[/]: {exc}", highlight=False)
    try:
        rows = describe_adapters(selected, options)
    except AdapterError as exc:
        _fail(console, exc)
    table = Table(title="dataset adapters (params.yaml dataset.name: NAME)", title_justify="left")
    for column in ("name", "origin", "labels", "class"):
        table.add_column(column)
    for row in rows:
        name = f"[bold]{row.name}[/] (selected)" if row.selected else row.name
        labels = f"[red]{row.error}[/]" if row.error else row.labels
        table.add_row(name, row.origin, labels, row.where)
    console.print(table)


@app.command("validate")
def validate_dataset(
    name: str | None = typer.Argument(None, help="adapter name; default: dataset.name in params.yaml"),
    option: list[str] = typer.Option([], "--option", "-o", help="KEY=VALUE, an adapter option (YAML value) over dataset.options; repeatable"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="where dataset.name / dataset.options are read"),
    docs: Path | None = typer.Option(None, "--docs", help="also write GX Data Docs (HTML) into this folder"),
    json_file: Path | None = typer.Option(None, "--json", help="also write the report as JSON (as reports/validation.json)"),
) -> None:
    """Check a dataset alone: load it with its adapter and run the GX suite (no pipeline outputs are touched)."""
    from rich.console import Console

    from adapters.base import AdapterError
    from adapters.download import DownloadError
    from adapters.hygiene import Hygiene
    from adapters.inspection import VALIDATE_ROWS, docs_rows, load_and_validate, print_report, write_data_docs
    from flows.common import cache_dir
    from reweigh.io import write_json
    from reweigh.params import ParamsError, load_params, parse_assignments

    console = Console()
    options: dict = {}
    hygiene, validate_rows, seed = None, VALIDATE_ROWS, 0
    try:
        if params_file.exists():
            params = load_params(params_file)
            dataset, hygiene = params.dataset, Hygiene.from_params(params.dataset, params.clean.steps)
            validate_rows, seed = dataset.validate_rows, params.seed
            if name is None or name == dataset.name:
                name, options = dataset.name, dict(dataset.options)
        elif name is None:
            raise ParamsError(f"{params_file} not found: name the adapter (reweigh validate NAME) or pass --params")
        options |= parse_assignments(option, "--option", "-o path=data/raw/reviews.csv")
        console.print(f"validating with adapter '{name}', options {options}", highlight=False)
        adapter, source, report = load_and_validate(name, options, cache_dir(), hygiene, validate_rows, seed)
    except (AdapterError, ParamsError, DownloadError) as exc:
        _fail(console, exc)
    print_report(report, console)
    if json_file:
        write_json(report.to_dict(), json_file)
        console.print(f"report: {json_file}", highlight=False)
    if docs:
        index = write_data_docs(docs_rows(source, report.rows, validate_rows, seed), adapter, docs)
        console.print(f"GX Data Docs: {index}", highlight=False)
    if not report.success:
        raise typer.Exit(1)


@app.command("new-adapter")
def new_adapter(
    name: str = typer.Argument(..., help="the adapter's name, as dataset.name in params.yaml (a lowercase identifier)"),
    labels: str = typer.Option("neg,pos", "--labels", help="class names, comma-separated, in class-id order"),
    root: Path = typer.Option(Path("."), "--root", help="the project root (where adapters/ and tests/ are)"),
    force: bool = typer.Option(False, "--force", help="overwrite existing files"),
) -> None:
    """Write adapters/NAME.py and tests/test_adapter_NAME.py: fill in load(), then validate and run."""
    from rich.console import Console

    from adapters.base import AdapterError
    from adapters.scaffold import write_adapter

    console = Console()
    try:
        module, test = write_adapter(name, root, tuple(labels.split(",")), force=force)
    except AdapterError as exc:
        _fail(console, exc)
    console.print(
        f"wrote {module} and {test}\nnext:\n"
        f"  1. fill in load() in {module} (and its labels, options)\n"
        f"  2. reweigh validate {name}            the GX suite alone, a readable report\n"
        f"  3. pytest {test}\n"
        f"  4. set dataset.name: {name} (and dataset.options) in params.yaml, then dvc repro\n"
        "see docs/adapters.md",
        highlight=False,
    )


@app.command("serve")
def serve_retrain(
    name: str | None = typer.Option(None, "--name", help="deployment name; default: retrain.deployment in params.yaml"),
    cron: str | None = typer.Option(None, "--cron", help="schedule; default: retrain.cron in params.yaml"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root the retrain runs in"),
) -> None:
    """Serve the scheduled retrain deployment on the Prefect server at PREFECT_API_URL (Ctrl-C stops it)."""
    from flows.serve import ServeError, serve
    from reweigh.params import ParamsError

    try:
        serve(workdir, name, cron)
    except (ServeError, ParamsError) as exc:
        _fail_plain(exc)


@app.command("deploy")
def deploy_retrain(
    pool: str = typer.Option(..., "--pool", help="work pool, e.g. made by: prefect work-pool create reweigh --type process"),
    name: str | None = typer.Option(None, "--name", help="deployment name; default: retrain.deployment in params.yaml"),
    cron: str | None = typer.Option(None, "--cron", help="schedule; default: retrain.cron in params.yaml"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root the retrain runs in"),
) -> None:
    """Register the retrain deployment with a work pool; `prefect worker start --pool POOL` runs it."""
    from flows.serve import ServeError, deploy
    from reweigh.params import ParamsError

    try:
        deploy(pool, workdir, name, cron)
    except (ServeError, ParamsError) as exc:
        _fail_plain(exc)


@app.command("retrain")
def retrain_once(
    set_param: list[str] = typer.Option([], "--set", "-S", help="KEY=VALUE over params.yaml (YAML value), e.g. -S train.epochs=3; repeatable"),
    pull: bool = typer.Option(False, "--pull/--no-pull", help="dvc pull before reproducing"),
    push: bool = typer.Option(True, "--push/--no-push", help="dvc push after a successful run"),
    remote: str | None = typer.Option(None, "--remote", "-r", help="DVC remote; default: the default remote"),
    promote: str | None = typer.Option(None, "--promote", help="always | if_not_worse; default: retrain.promote in params.yaml"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root"),
) -> None:
    """Retrain once now, as the deployment would: anything new? → challenger → judged → promoted or not.

    Exits 0 when promoted or when there was nothing new, 3 when the challenger was not promoted."""
    from prefect.exceptions import FailedRun

    from flows.retrain.flow import RetrainFailed, retrain_flow
    from reweigh.params import ParamsError, parse_assignments

    try:
        overrides = parse_assignments(set_param)
    except ParamsError as exc:
        _fail_plain(exc)
    try:
        retrain_flow(workdir=str(workdir.resolve()), overrides=overrides, pull=pull, push=push, remote=remote, promote=promote)
    except RetrainFailed as exc:
        _fail_plain(exc)
    except FailedRun as exc:  # the challenger was judged and not promoted: the champion stays
        typer.echo(f"retrain: {exc}", err=True)
        raise typer.Exit(3)


@app.command("rollback")
def rollback_command(
    version: str | None = typer.Argument(None, help="the version to restore, e.g. v0.0.1; default: the one before the champion"),
    remote: str | None = typer.Option(None, "--remote", "-r", help="DVC remote to pull from when the cache lacks it"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root"),
) -> None:
    """Make an earlier promoted version the champion again: its dvc.lock, params.yaml, reports/ and outputs,
    from git and the DVC cache (or remote), without training; committed, and the champion stage assigned to it."""
    from flows.retrain.commands import RetrainFailed, workspace_lock
    from flows.retrain.versions import ARTIFACT, rollback

    root = workdir.resolve()
    try:
        with workspace_lock(root, 60):  # never under a running retrain
            done = rollback(root, version, remote)
    except RetrainFailed as exc:
        _fail_plain(exc)
    typer.echo(f"rollback: {ARTIFACT} {done['version']} is the champion again (was {done['previous']}); "
               f"restored from {done['restored_from'][:12]}, committed {done['commit'][:12]}. `gto show {ARTIFACT}` lists the versions.")


@app.command("scaling")
def scaling_command(
    quick: bool = typer.Option(False, "--quick", help="three sizes, a short bootstrap: for tests and a first look"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="experiments at once (dvc queue start --jobs); default: scaling.jobs"),
    collect_only: bool = typer.Option(False, "--collect-only", help="queue nothing: rewrite reports/scaling.* from what has run"),
    workdir: Path = typer.Option(Path("."), "--workdir", help="the project root, after a finished run (make repro)"),
) -> None:
    """Learning curves: queue DVC experiments over train.label_limit (and scaling.widths), run the missing ones
    with `dvc queue start`, fit a power law per model and write reports/scaling.md, .json and figures."""
    from flows.scaling.grid import ScalingError
    from flows.scaling.run import scaling
    from reweigh.params import ParamsError

    try:
        scaling(workdir, quick=quick, jobs=jobs, collect_only=collect_only)
    except (ScalingError, ParamsError) as exc:
        _fail_plain(exc)


def _fail_plain(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def _fail(console: object, exc: Exception) -> NoReturn:
    console.print(f"[red]error[/]: {exc}", highlight=False)  # type: ignore[attr-defined]
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
