"""What a dataset adapter reads, and a fingerprint of it that changes when the data does.

DVC reruns a stage when a dependency named in dvc.yaml changes; what an adapter reads depends on params
(a table's path, the IMDB archive or URL) and on code, so dvc.yaml cannot name it. Instead the adapter
declares it (the optional `sources()` of the protocol), the `sources` stage fingerprints each source into
reports/sources.json, and ingest depends on that file.

A fingerprint holds only what identifies the content, never where it lies on this machine, so a clone
whose archive sits elsewhere (REWEIGH_IMDB_ARCHIVE) sees the same fingerprint:
- a file: its name, size and MD5 (MD5 as DVC does; 84 MB of IMDB archive in about 0.2 s);
- a folder: the number of files, their total size and an MD5 over (relative path, MD5) of every file;
- an http(s) URL: what a HEAD request says of it (ETag, Last-Modified, Content-Length), nothing downloaded.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from adapters.base import AdapterError, MissingSource

_CHUNK = 1 << 20


class SourceError(AdapterError):
    """A declared source cannot be fingerprinted; says which and what to change."""


class MissingSourceError(SourceError, MissingSource):
    """A declared file or folder is not there."""


def declared_sources(adapter: object) -> list[str]:
    """The adapter's `sources()`: local paths or URLs as strings; [] when it declares none."""
    method = getattr(adapter, "sources", None)
    if method is None:
        return []
    found = method() if callable(method) else method
    return [str(s) for s in found or []]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> dict[str, Any]:
    return {"kind": "file", "name": path.name, "size": path.stat().st_size, "md5": md5_of(path)}


def folder_fingerprint(path: Path) -> dict[str, Any]:
    """One MD5 over every file under `path` (sorted relative paths, hidden files skipped)."""
    digest = hashlib.md5(usedforsecurity=False)
    files, size = 0, 0
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)):
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{md5_of(file)}\n".encode())
        files, size = files + 1, size + file.stat().st_size
    return {"kind": "folder", "name": path.name, "files": files, "size": size, "md5": digest.hexdigest()}


def url_fingerprint(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """What a HEAD request says identifies the resource; raises httpx.HTTPError when it cannot be asked."""
    response = httpx.head(url, follow_redirects=True, timeout=timeout)
    response.raise_for_status()
    headers = response.headers
    found = {key: headers.get(header) for key, header in
             (("etag", "ETag"), ("last_modified", "Last-Modified"), ("size", "Content-Length")) if headers.get(header)}
    if "size" in found:
        found["size"] = int(found["size"])
    return {"kind": "url", "url": url, **found}


def fingerprint(source: str, root: Path = Path("."), previous: dict[str, Any] | None = None,
                warn: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The fingerprint of one source (a path relative to `root`, an absolute path, or a URL).

    A URL that cannot be asked right now (offline, server down) keeps its `previous` fingerprint with a
    warning: the data it names is then what the download cache holds, which is what ingest will read.
    """
    if is_url(source):
        try:
            return url_fingerprint(source)
        except httpx.HTTPError as exc:
            if previous is not None:
                warn(f"could not check {source} ({type(exc).__name__}: {exc}); assuming it is unchanged")
                return previous
            warn(f"could not check {source} ({type(exc).__name__}: {exc}); ingest will download or use its cache")
            return {"kind": "url", "url": source, "unchecked": True}
    path = Path(os.path.expanduser(source))
    path = path if path.is_absolute() else root / path
    if path.is_file():
        return file_fingerprint(path)
    if path.is_dir():
        return folder_fingerprint(path)
    raise MissingSourceError(f"the dataset's source {source} does not exist ({path}): create it, or fix the adapter's options in params.yaml")


def describe(fp: dict[str, Any]) -> str:
    """One line for logs and the retrain artifact: 'reviews.csv 12,345 B md5 1a2b3c4d'."""
    if fp.get("kind") == "url":
        parts = [fp.get("url", "?")] + [f"{k} {fp[k]}" for k in ("etag", "last_modified", "size") if k in fp]
        return " ".join(parts) if len(parts) > 1 else f"{fp.get('url', '?')} (not checked)"
    extra = f", {fp['files']} files" if fp.get("kind") == "folder" else ""
    return f"{fp.get('name', '?')} ({fp.get('size', 0):,} B{extra}, md5 {str(fp.get('md5', '?'))[:8]})"
