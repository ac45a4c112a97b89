"""IMDB Large Movie Review Dataset (Maas et al., ACL 2011): 25k train, 25k test, 50k unlabelled reviews.

The official archive is downloaded once into the cache (progress bar, resumable, verified), or read from a
local copy: `dataset.options.archive` in params.yaml, or the environment variable REWEIGH_IMDB_ARCHIVE,
which wins (handy offline: `REWEIGH_IMDB_ARCHIVE=/path/aclImdb_v1.tar.gz dvc repro`).

Reviews are read straight out of the tar stream, never extracted, so a hostile archive cannot write
anywhere; members with absolute or `..` paths, links, or sizes past the limits are refused anyway.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import polars as pl

from adapters.base import AdapterError
from adapters.download import DownloadError, fetch

OFFICIAL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ENV_ARCHIVE = "REWEIGH_IMDB_ARCHIVE"
# Official layout: aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt and aclImdb/train/unsup/<id>_0.txt
_REVIEW = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_OFFICIAL_COUNTS = {"train": 25_000, "test": 25_000, "unsup": 50_000}


class ImdbAdapter:
    name = "imdb"
    labels = ("neg", "pos")  # class 1 = positive review

    def __init__(
        self,
        archive: str | None = None,
        url: str = OFFICIAL_URL,
        sha256: str | None = None,
        include_unsup: bool = True,
        verify_counts: bool = True,
        max_member_bytes: int = 10 << 20,
        max_total_bytes: int = 4 << 30,
    ) -> None:
        self.archive = os.environ.get(ENV_ARCHIVE) or archive or None
        self.url = url
        self.sha256 = sha256
        self.include_unsup = include_unsup
        self.verify_counts = verify_counts
        self.max_member_bytes = max_member_bytes
        self.max_total_bytes = max_total_bytes

    @property
    def row_count(self) -> tuple[int, int] | None:
        if not self.verify_counts:
            return None
        n = _OFFICIAL_COUNTS["train"] + _OFFICIAL_COUNTS["test"] + (_OFFICIAL_COUNTS["unsup"] if self.include_unsup else 0)
        return (n, n)

    def expectations(self) -> list:
        import great_expectations as gx

        return [gx.expectations.ExpectColumnValuesToBeBetween(column="rating", min_value=0, max_value=10)]

    def sources(self) -> list[str]:
        """The local archive, else the URL (fingerprinted by the `sources` stage; see adapters/sources.py)."""
        return [str(Path(self.archive).expanduser())] if self.archive else [self.url]

    def source(self, cache_dir: Path) -> Path:
        if self.archive:
            path = Path(self.archive).expanduser()
            if not path.is_file():
                raise AdapterError(f"dataset 'imdb': local archive {path} does not exist (set by {ENV_ARCHIVE} or dataset.options.archive)")
            return path
        return fetch(self.url, Path(cache_dir) / "imdb" / "aclImdb_v1.tar.gz", sha256=self.sha256)

    def load(self, cache_dir: Path) -> pl.DataFrame:
        path = self.source(cache_dir)
        rows: dict[str, list] = {"id": [], "text": [], "label": [], "split": [], "rating": []}
        bad_utf8: list[str] = []
        total = 0
        try:
            with _decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    _refuse_hostile(member, path)
                    # Every member counts: skipping one in a stream still decompresses it.
                    total += member.size
                    if total > self.max_total_bytes:
                        raise AdapterError(f"dataset 'imdb': {path}: members exceed {self.max_total_bytes:,} bytes uncompressed; refusing (decompression bomb?)")
                    match = _REVIEW.match(member.name)
                    if not match or not member.isfile():
                        continue
                    split, folder, doc_id, rating = match.groups()
                    if folder == "unsup" and not self.include_unsup:
                        continue
                    if member.size > self.max_member_bytes:
                        raise AdapterError(f"dataset 'imdb': {path}: member {member.name} is {member.size:,} bytes, over the {self.max_member_bytes:,} limit")
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        bad_utf8.append(member.name)
                        continue
                    rows["id"].append(f"{split}/{folder}/{doc_id}_{rating}")
                    rows["text"].append(text)
                    rows["label"].append(None if folder == "unsup" else folder)
                    rows["split"].append("unsup" if folder == "unsup" else split)
                    rows["rating"].append(int(rating))
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            if not self.archive:  # our own download, e.g. cut short by a server that sent no length
                path.unlink(missing_ok=True)
                raise DownloadError(f"dataset 'imdb': the downloaded {path} is not a readable .tar.gz archive ({exc}); removed it, the next attempt downloads it again") from exc
            raise AdapterError(f"dataset 'imdb': {path} is not a readable .tar.gz archive: {exc}") from exc
        if bad_utf8:
            raise AdapterError(f"dataset 'imdb': {len(bad_utf8)} review(s) are not valid UTF-8, e.g. {bad_utf8[:3]}")
        if not rows["id"]:
            raise AdapterError(f"dataset 'imdb': {path} holds no reviews in the aclImdb/<split>/<pos|neg|unsup>/<id>_<rating>.txt layout")
        df = pl.DataFrame(rows, schema={"id": pl.String, "text": pl.String, "label": pl.String, "split": pl.String, "rating": pl.Int8})
        # The tar order is an accident of how the archive was built; sort so the table is the same every time.
        return df.sort(["split", "label", "id"], nulls_last=True)


# Decompressing ourselves, not with tarfile's "r|*": tarfile takes a stream that ends early at a header for
# the end of the archive and returns the members so far; gzip, bz2 and lzma raise EOFError at a cut instead.
_COMPRESSIONS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def _decompressed(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, opener in _COMPRESSIONS:
        if head.startswith(magic):
            return opener(path, "rb")
    return open(path, "rb")


def _refuse_hostile(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise AdapterError(f"dataset 'imdb': {archive}: refused member {member.name!r}: path escapes the archive")
    if member.issym() or member.islnk():
        raise AdapterError(f"dataset 'imdb': {archive}: refused member {member.name!r}: links are not allowed ({member.linkname!r})")
    if member.isdev():
        raise AdapterError(f"dataset 'imdb': {archive}: refused member {member.name!r}: device files are not allowed")
