"""Downloads against a local HTTP server (127.0.0.1, started here): dropped, truncated, wrong checksum.

A download is written to `<name>.part` and renamed only when complete and verified, so no half file is
ever trusted; a dropped connection is resumed with a Range request; the ingest task retries what a retry
can fix (DownloadError) with exponential backoff, and nothing else.
"""
from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.base import AdapterError
from adapters.download import DownloadError, fetch
from adapters.imdb import ImdbAdapter
from conftest import make_imdb_archive

pytestmark = pytest.mark.timeout(120)


class Server:
    """Serves `body` at /file; `plan` says, request by request, how: 'ok', 'drop' (the full length is
    announced, half is sent, the connection closed), 'nolength' (half is sent without a length, then
    closed: looks complete), 'norange' (ignores Range), 'badrange' (answers a Range from byte 0 as 206)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.plan: list[str] = []
        self.requests: list[str | None] = []  # the Range header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                mode = server.plan.pop(0) if server.plan else "ok"
                body, start = server.body, 0
                rng = self.headers.get("Range")
                if rng and mode not in ("norange",):
                    start = 0 if mode == "badrange" else int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                rest = body[start:]
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if mode in ("drop", "nolength"):
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                else:
                    self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    with Server(BODY) as srv:
        yield srv


def test_dropped_connection_is_resumed(tmp_path, server):
    dest = tmp_path / "file.bin"
    server.plan = ["drop"]
    with pytest.raises(DownloadError, match="partial file kept for resume"):
        fetch(server.url, dest, sha256=SHA, timeout=10)
    part = dest.with_name("file.bin.part")
    assert not dest.exists() and part.stat().st_size == len(BODY) // 2
    assert fetch(server.url, dest, sha256=SHA, timeout=10) == dest
    assert dest.read_bytes() == BODY and not part.exists()
    assert server.requests == [None, f"bytes={len(BODY) // 2}-"]  # resumed, not restarted


def test_resume_refused_by_the_server_starts_over(tmp_path, server):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"stale bytes of another version")
    server.plan = ["norange"]
    fetch(server.url, dest, sha256=SHA, timeout=10)
    assert dest.read_bytes() == BODY


def test_resume_at_the_wrong_offset_is_discarded(tmp_path, server):
    dest = tmp_path / "file.bin"
    part = dest.with_name("file.bin.part")
    part.write_bytes(BODY[:1000])
    server.plan = ["badrange"]
    with pytest.raises(DownloadError, match="not byte 1000; removed the partial file"):
        fetch(server.url, dest, timeout=10)
    assert not part.exists() and not dest.exists()
    fetch(server.url, dest, timeout=10)
    assert dest.read_bytes() == BODY


def test_wrong_checksum_leaves_nothing_behind(tmp_path, server):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="does not match the expected"):
        fetch(server.url, dest, sha256="0" * 64, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_truncated_without_a_length_is_caught_by_the_checksum(tmp_path, server):
    dest = tmp_path / "file.bin"
    server.plan = ["nolength"]
    with pytest.raises(DownloadError, match="does not match the expected"):
        fetch(server.url, dest, sha256=SHA, timeout=10)
    assert list(tmp_path.iterdir()) == []
    fetch(server.url, dest, sha256=SHA, timeout=10)
    assert dest.read_bytes() == BODY


def test_a_cached_file_failing_its_checksum_is_downloaded_again(tmp_path, server):
    dest = tmp_path / "file.bin"
    dest.write_bytes(BODY[:100])  # e.g. left by an older version without checksums
    fetch(server.url, dest, sha256=SHA, timeout=10)
    assert dest.read_bytes() == BODY and len(server.requests) == 1


def test_server_error_is_a_download_error(tmp_path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_error(503)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="503"):
            fetch(f"http://127.0.0.1:{httpd.server_address[1]}/x", tmp_path / "x", timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the IMDB adapter and the ingest task


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory) -> bytes:
    return make_imdb_archive(tmp_path_factory.mktemp("dl") / "a.tar.gz", n_per_label=30, n_unsup=0).read_bytes()


def test_truncated_archive_without_length_or_checksum_is_never_trusted(tmp_path, archive_bytes):
    """No length, no checksum: the download looks complete; reading it fails, so the cached copy is
    removed and a retryable DownloadError raised: the next attempt downloads it again."""
    with Server(archive_bytes) as srv:
        srv.plan = ["nolength"]
        adapter = ImdbAdapter(url=srv.url, verify_counts=False)
        with pytest.raises(DownloadError, match="removed it, the next attempt downloads it again"):
            adapter.load(tmp_path)
        assert list((tmp_path / "imdb").iterdir()) == []
        assert adapter.load(tmp_path).height == 120


def load_with_retries(options: dict, cache: Path, monkeypatch):
    """Run the ingest stage's own task in a flow, with its retries and condition, but no delay."""
    from prefect import flow

    from flows.ingest import load_dataset

    monkeypatch.setenv("REWEIGH_CACHE", str(cache))
    monkeypatch.delenv("REWEIGH_IMDB_ARCHIVE", raising=False)

    @flow(name="load-with-retries")
    def run() -> int:
        _, df = load_dataset.with_options(retry_delay_seconds=0)("imdb", options)
        return df.height

    return run()


def test_ingest_task_retries_with_backoff_and_resumes(tmp_path, archive_bytes, monkeypatch):
    from flows.ingest import load_dataset

    # The stage's real policy: 3 retries, exponential backoff 2 s, 4 s, 8 s, only for DownloadError.
    assert load_dataset.retries == 3
    assert list(load_dataset.retry_delay_seconds) == [2, 4, 8]
    sha = hashlib.sha256(archive_bytes).hexdigest()
    with Server(archive_bytes) as srv:
        srv.plan = ["drop", "drop"]  # two dropped connections, then the rest arrives
        rows = load_with_retries({"url": srv.url, "sha256": sha, "verify_counts": False}, tmp_path / "cache", monkeypatch)
    assert rows == 120
    n = len(archive_bytes)
    assert srv.requests == [None, f"bytes={n // 2}-", f"bytes={n // 2 + (n - n // 2) // 2}-"]
    assert [p.name for p in (tmp_path / "cache" / "imdb").iterdir()] == ["aclImdb_v1.tar.gz"]


def test_ingest_task_gives_up_after_its_retries(tmp_path, archive_bytes, monkeypatch):
    with Server(archive_bytes) as srv:
        srv.plan = ["drop"] * 10
        with pytest.raises(DownloadError, match="partial file kept for resume"):
            load_with_retries({"url": srv.url, "verify_counts": False}, tmp_path / "cache", monkeypatch)
    assert len(srv.requests) == 4  # one try + 3 retries
    assert not (tmp_path / "cache" / "imdb" / "aclImdb_v1.tar.gz").exists()


def test_bad_data_is_not_retried(tmp_path, monkeypatch):
    """A hostile archive fails the same way every time: one request, no retry."""
    import tarfile

    link = tarfile.TarInfo("aclImdb/train/pos/1_9.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    path = make_imdb_archive(tmp_path / "hostile.tar.gz", n_per_label=2, n_unsup=0, extra_members=[(link, None)])
    with Server(path.read_bytes()) as srv:
        with pytest.raises(AdapterError, match="links are not allowed"):
            load_with_retries({"url": srv.url, "verify_counts": False}, tmp_path / "cache", monkeypatch)
    assert len(srv.requests) == 1


def test_exhausted_download_is_a_clear_exit_1(monkeypatch, capsys):
    from flows.common import run_stage

    monkeypatch.chdir(Path(__file__).resolve().parents[1])

    def flow() -> None:
        raise DownloadError("http://127.0.0.1:1/x: ConnectError: refused (partial file kept for resume: x.part)")

    with pytest.raises(SystemExit) as info:
        run_stage(flow, "ingest")
    assert info.value.code == 1
    assert "reweigh ingest: http://127.0.0.1:1/x: ConnectError" in capsys.readouterr().err
