"""What an adapter reads is a DVC dependency: the `sources` stage fingerprints it; ingest reruns on new data only."""
from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.base import MissingSource
from adapters.scaffold import write_adapter
from adapters.sources import SourceError, fingerprint
from conftest import make_project
from flows.sources import changes
from retrain_harness import reviews, write_rows


def test_file_fingerprint_follows_content_not_place_or_time(tmp_path) -> None:
    a, b = tmp_path / "one" / "data.csv", tmp_path / "two" / "data.csv"
    for path in (a, b):
        path.parent.mkdir()
        path.write_text("text,label\nhello,pos\n")
    first = fingerprint(str(a))
    os.utime(a, (1, 1))
    assert fingerprint(str(a)) == first == fingerprint(str(b))  # same bytes elsewhere, or touched: same
    a.write_text("text,label\nhello,pos\nbye,neg\n")
    assert fingerprint(str(a))["md5"] != first["md5"]
    assert str(tmp_path) not in str(first)  # no machine-specific path: a clone sees the same fingerprint


def test_folder_fingerprint_sees_a_new_file_and_relative_paths_resolve_against_the_root(tmp_path) -> None:
    (tmp_path / "corpus" / "pos").mkdir(parents=True)
    (tmp_path / "corpus" / "pos" / "1.txt").write_text("good")
    before = fingerprint("corpus", root=tmp_path)
    assert before["kind"] == "folder" and before["files"] == 1
    (tmp_path / "corpus" / "pos" / "2.txt").write_text("great")
    after = fingerprint("corpus", root=tmp_path)
    assert after["files"] == 2 and after["md5"] != before["md5"]
    with pytest.raises(SourceError, match="missing.csv does not exist"):
        fingerprint("missing.csv", root=tmp_path)


def test_a_missing_data_file_keeps_the_recorded_fingerprint_and_without_one_fails(tmp_path) -> None:
    # A clone of a project whose data/raw/reviews.csv git does not track: `dvc pull` restored every output,
    # and the always-run sources check must not fail on the file it cannot see (docs/retraining.md).
    from flows.sources import collect
    from reweigh.params import DatasetParams

    data = tmp_path / "data" / "raw" / "reviews.csv"
    data.parent.mkdir(parents=True)
    write_rows(data, reviews(20, "train", 0) + reviews(20, "test", 1), mode="w")
    dataset = DatasetParams(name="table", options={"path": str(data)})
    recorded, declared, title = collect(dataset)
    assert declared == [str(data)] and title == "reviews.csv"
    data.unlink()
    warnings: list[str] = []
    kept, declared, _ = collect(dataset, recorded=recorded, warn=warnings.append)
    assert kept == recorded and declared == []
    assert len(warnings) == 1 and "reviews.csv does not exist" in warnings[0] and "kept the fingerprint" in warnings[0]
    with pytest.raises(MissingSource, match="reviews.csv does not exist"):
        collect(dataset)  # nothing recorded: nothing to keep


class _Versioned(BaseHTTPRequestHandler):
    version = "v1"

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("ETag", f'"{type(self).version}"')
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_url_fingerprint_asks_head_and_keeps_the_previous_one_when_offline(tmp_path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Versioned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.tar.gz"
    try:
        first = fingerprint(url)
        assert first == {"kind": "url", "url": url, "etag": '"v1"', "size": 1234}
        _Versioned.version = "v2"
        second = fingerprint(url)
        assert second["etag"] == '"v2"'
        assert changes({"sources": [first]}, {"sources": [second]})[0]["new"].endswith('etag "v2" size 1234')
    finally:
        server.shutdown()
        server.server_close()  # the port refuses at once (an open socket nobody answers would wait out httpx's 30 s)
        _Versioned.version = "v1"
    warnings: list[str] = []
    assert fingerprint(url, previous=second, warn=warnings.append) == second  # server gone: assume unchanged
    assert warnings and "assuming it is unchanged" in warnings[0]


def _repro(project, *targets: str) -> str:
    return project.dvc("repro", *targets, timeout=600).stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_changed_table_file_reruns_ingest_and_an_unchanged_one_does_not(tmp_path) -> None:
    data = tmp_path / "outside" / "reviews.csv"  # outside the project, as a user's data usually is
    write_rows(data, reviews(40, "train", 1) + reviews(20, "test", 2), mode="w")
    project = make_project(tmp_path)
    project.replace_section("dataset", {"name": "table", "val_fraction": 0.1, "limit": 0, "train_limit": 0,
                                        "options": {"path": str(data), "split_column": "split"}})
    first = _repro(project, "ingest")
    assert "Running stage 'ingest'" in first
    again = _repro(project, "ingest")
    assert "Running stage 'sources'" in again  # always checked ...
    assert "Stage 'ingest' didn't change, skipping" in again  # ... and nothing new: ingest skipped
    os.utime(data, (2, 2))
    assert "Stage 'ingest' didn't change, skipping" in _repro(project, "ingest")  # a touch is not new data
    write_rows(data, reviews(10, "train", 3))
    rerun = _repro(project, "ingest")
    assert "Running stage 'ingest'" in rerun
    assert "reviews.csv changed" in rerun
    import json
    rows = json.loads((project.path / "data" / "dataset.json").read_text())["rows"]
    assert rows["train"] + rows["val"] == 50


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_adapter_without_sources_is_named_and_the_scaffold_declares_its_sources(tmp_path) -> None:
    project = make_project(tmp_path)
    (project.path / "adapters" / "plain.py").write_text(
        "import polars as pl\n\nclass Plain:\n    name = 'plain'\n    labels = ('neg', 'pos')\n\n"
        "    def load(self, cache_dir):\n        return pl.DataFrame({'text': ['a b', 'c d'], 'label': ['neg', 'pos'], 'split': ['train', 'test']})\n")
    project.replace_section("dataset", {"name": "plain", "val_fraction": 0.1, "limit": 0, "train_limit": 0, "options": {}})
    result = project.run(os.sys.executable, "-m", "flows.sources")
    assert "declares no sources()" in result.stderr and "docs/adapters.md" in result.stderr
    module, _ = write_adapter("news_feed", root=project.path)
    assert "def sources(self) -> list[str]:" in module.read_text()
