"""`reweigh`: the command-line tool. Each command is a thin door into a module that does the work."""
from __future__ import annotations

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


if __name__ == "__main__":
    app()
