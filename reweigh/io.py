"""Atomic writes: every stage output appears whole or not at all.

Each writer writes to a temporary sibling and renames it over the target, so an interrupted run leaves
either the previous complete file or none, never a half-written one that the next run would trust.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # polars is imported where it is used: models/ runs with torch + numpy alone (bench/ablations.py)
    import polars as pl


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`, else removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One fixed name per target, not a random one: a run killed mid-write (SIGKILL skips the `finally`)
    # leaves a temporary that the next write of `target` replaces, and writers that record their file's
    # name (torch.save names its zip archive after it) give the same bytes on every run. One writer per
    # target at a time: DVC runs each stage once at a time.
    tmp_path = target.with_name(f".{target.name}.tmp")
    tmp_path.unlink(missing_ok=True)
    tmp_path.touch()
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pl.DataFrame, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(target)


def write_json(obj: Any, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(target)


def write_text(text: str, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256: a stage's summary records its predictions' digest, so that a DVC dependency on the
    summaries' folder (reports/train) changes whenever any model's predictions do (dvc.yaml, the ensemble)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
