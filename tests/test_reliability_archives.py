"""Hostile archives are refused, and nothing is written outside the cache.

The IMDB adapter reads reviews out of the tar stream and never extracts, so no member can be written
anywhere; it still refuses `..` and absolute paths, links, device files and decompression bombs, so a
hostile archive ends the run with a clear error instead of being half-read.
"""
from __future__ import annotations

import ast
import gzip
import os
import tarfile
from pathlib import Path

import pytest

from adapters.base import AdapterError
from adapters.imdb import ImdbAdapter
from conftest import make_imdb_archive

ROOT = Path(__file__).resolve().parents[1]


def member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (member("aclImdb/train/pos/../../../../escaped_7.txt"), "path escapes the archive"),
        (member("../escaped.txt"), "path escapes the archive"),
        (member("/tmp/reweigh-absolute_7.txt"), "path escapes the archive"),
        (member("aclImdb/train/pos/999_9.txt", kind=tarfile.SYMTYPE, link="/etc/passwd"), "links are not allowed"),
        (member("aclImdb/train/pos", kind=tarfile.SYMTYPE, link="../../outside"), "links are not allowed"),
        (member("aclImdb/train/pos/998_9.txt", kind=tarfile.LNKTYPE, link="../../../etc/shadow"), "links are not allowed"),
        (member("aclImdb/train/pos/997_9.txt", kind=tarfile.CHRTYPE), "device files are not allowed"),
        (member("aclImdb/fifo", kind=tarfile.FIFOTYPE), "device files are not allowed"),
    ],
    ids=["dotdot-in-layout", "dotdot", "absolute", "symlink-out", "symlinked-dir", "hardlink", "device", "fifo"],
)
def test_hostile_member_is_refused_and_nothing_is_written(tmp_path, extra, expected):
    archive = make_imdb_archive(tmp_path / "in" / "aclImdb_v1.tar.gz", n_per_label=3, n_unsup=2, extra_members=[extra])
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    cache.mkdir()
    outside.mkdir()
    before = snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(outside)  # a relative `../` member would land next to here if anything extracted it
    try:
        with pytest.raises(AdapterError, match=expected) as info:
            ImdbAdapter(archive=str(archive), verify_counts=False).load(cache)
    finally:
        os.chdir(cwd)
    assert "dataset 'imdb'" in str(info.value) and extra[0].name in str(info.value)
    assert snapshot(tmp_path) == before
    assert not Path("/tmp/reweigh-absolute_7.txt").exists()


def test_decompression_bomb_member_is_refused(tmp_path):
    """A 64 MiB review that compresses to ~64 KiB: refused by max_member_bytes before it is read."""
    bomb = b"\0" * (64 << 20)
    archive = make_imdb_archive(tmp_path / "bomb.tar.gz", n_per_label=2, n_unsup=0, extra_members=[member("aclImdb/train/pos/500_9.txt", bomb)])
    del bomb
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(AdapterError, match=r"500_9.txt is 67,108,864 bytes, over the 10,485,760 limit"):
        ImdbAdapter(archive=str(archive), verify_counts=False).load(tmp_path / "cache")


def test_decompression_bomb_in_total_is_refused(tmp_path):
    """Many members under the per-member limit, or members the adapter would skip, still count."""
    extra = [member(f"aclImdb/train/unsupBow_{i}.feat", b"\0" * (1 << 20)) for i in range(8)]
    archive = make_imdb_archive(tmp_path / "bomb.tar.gz", n_per_label=2, n_unsup=0, extra_members=extra)
    with pytest.raises(AdapterError, match=r"exceed 4,194,304 bytes uncompressed; refusing \(decompression bomb\?\)"):
        ImdbAdapter(archive=str(archive), verify_counts=False, max_total_bytes=4 << 20).load(tmp_path / "cache")


def test_within_the_limits_it_loads(tmp_path):
    archive = make_imdb_archive(tmp_path / "ok.tar.gz", n_per_label=3, n_unsup=2)
    df = ImdbAdapter(archive=str(archive), verify_counts=False).load(tmp_path / "cache")
    assert df.height == 3 * 4 + 2
    assert not (tmp_path / "cache").exists()  # a local archive is read in place, never copied or extracted


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<html><body>Sorry, you are offline</body></html>", "not a readable .tar.gz archive"),  # not what its name says
        (0.25, "not a readable .tar.gz archive"),  # truncated archives: cut inside a member or a header
        (0.5, "not a readable .tar.gz archive"),
        (0.75, "not a readable .tar.gz archive"),
        (0.95, "not a readable .tar.gz archive"),
        (gzip.compress(b"just text, not a tar"), "not a readable .tar.gz archive"),
    ],
    ids=["html", "cut-25%", "cut-50%", "cut-75%", "cut-95%", "gzip-not-tar"],
)
def test_archive_that_is_not_an_archive(tmp_path, content, expected):
    path = tmp_path / "aclImdb_v1.tar.gz"
    if isinstance(content, float):
        make_imdb_archive(path, n_per_label=20, n_unsup=0)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * content)])
    else:
        path.write_bytes(content)
    with pytest.raises(AdapterError, match=expected) as info:
        ImdbAdapter(archive=str(path), verify_counts=False).load(tmp_path / "cache")
    assert str(path) in str(info.value)
    assert path.exists()  # the user's own file is never deleted


def test_non_utf8_review_is_named(tmp_path):
    archive = make_imdb_archive(tmp_path / "a.tar.gz", n_per_label=2, n_unsup=0,
                                extra_members=[member("aclImdb/test/neg/77_2.txt", b"caf\xe9 latin-1 review")])
    with pytest.raises(AdapterError, match=r"not valid UTF-8, e.g. \['aclImdb/test/neg/77_2.txt'\]"):
        ImdbAdapter(archive=str(archive), verify_counts=False).load(tmp_path / "cache")


def test_no_extraction_without_a_filter_in_the_code():
    """Anything that ever extracts an archive must pass an extraction filter (e.g. filter="data")."""
    offenders = []
    for path in [*ROOT.glob("adapters/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("reweigh/*.py"), *ROOT.glob("models/*.py")]:
        source = path.read_text()
        if not any(lib in source for lib in ("tarfile", "zipfile", "unpack_archive")):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("extract", "extractall", "unpack_archive"):
                if not any(k.arg == "filter" for k in node.keywords):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"tar extraction without filter=: {offenders}"
