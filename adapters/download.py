"""Download into a cache: progress bar, resume of a partial file, checksum, atomic rename.

The file is written as `<name>.part` and renamed only once complete (and, when a sha256 is given,
verified), so a dropped connection never leaves a file the next run would trust; the next run resumes
the `.part` file with an HTTP Range request where the server allows it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn, TimeRemainingColumn


class DownloadError(Exception):
    """A download failed in a way a retry may fix (connection dropped, truncated, wrong checksum)."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Return `dest`, downloading `url` into it first unless a verified copy is already there."""
    dest = Path(dest)
    if dest.exists():
        if sha256 is not None:
            if sha256_of(dest) == sha256:
                return dest
            dest.unlink()  # a cached file that fails its checksum is not trusted
        elif not _changed_upstream(url, dest):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code == 416:  # the part file is already complete
                pass
            else:
                resp.raise_for_status()
                if have and resp.status_code != 206:  # server ignored Range: start over
                    have = 0
                elif have and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                    part.unlink()  # resumed somewhere else than asked: appending would corrupt the file
                    raise DownloadError(f"{url}: server resumed at {resp.headers.get('Content-Range')!r}, not byte {have}; removed the partial file")
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as out, _progress() as progress:
                    task = progress.add_task(f"download {dest.name}", total=total, completed=have)
                    for block in resp.iter_bytes():  # as received: a drop loses nothing already sent
                        out.write(block)
                        progress.advance(task, len(block))
                if total is not None and part.stat().st_size < total:
                    raise DownloadError(f"{url}: truncated at {part.stat().st_size} of {total} bytes")
    except httpx.HTTPError as exc:
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc} (partial file kept for resume: {part})") from exc
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {got} does not match the expected {sha256}; removed the download")
    os.replace(part, dest)
    _remember_upstream(url, dest)
    return dest


def _stamp(dest: Path) -> Path:
    return dest.with_name(dest.name + ".source.json")


def _remember_upstream(url: str, dest: Path) -> None:
    """Keep what the server said of `url` when it was downloaded, to see later whether it changed."""
    from adapters.sources import url_fingerprint

    try:
        _stamp(dest).write_text(json.dumps(url_fingerprint(url)))
    except (httpx.HTTPError, OSError):
        _stamp(dest).unlink(missing_ok=True)


def _changed_upstream(url: str, dest: Path) -> bool:
    """True when the server now describes `url` differently (ETag, Last-Modified, size) from when the
    cached copy was downloaded; False when it cannot be asked or nothing was recorded (use the cache)."""
    from adapters.sources import url_fingerprint

    try:
        before = json.loads(_stamp(dest).read_text())
        now = url_fingerprint(url)
    except (OSError, ValueError, httpx.HTTPError):
        return False
    if now == before:
        return False
    dest.unlink()  # stale: download the new version (the caller goes on to), never resuming the old one
    dest.with_name(dest.name + ".part").unlink(missing_ok=True)
    return True


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), transient=False,
    )
