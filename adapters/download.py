"""Download into a cache: progress bar, resume of a partial file, checksum, atomic rename.

The file is written as `<name>.part` and renamed only once complete (and, when a sha256 is given,
verified), so a dropped connection never leaves a file the next run would trust; the next run resumes
the `.part` file with an HTTP Range request where the server allows it.
"""
from __future__ import annotations

import hashlib
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
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        dest.unlink()  # a cached file that fails its checksum is not trusted
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
    return dest


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), transient=False,
    )
