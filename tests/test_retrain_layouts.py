"""Wherever in the project the adapter's data lives, the retrain's `dvc exp run --temp` finds it.

The temp copy of `dvc exp run --temp` holds what git tracks; flows/retrain/flow.py `local_copy_paths` names
what `-C` must copy in (issue 20: a file in an untracked folder made DVC's copy fail). For each layout:
  (a) `local_copy_paths` on a real git repo gives the expected `-C` paths;
  (b) a real `dvc exp run --temp -C …` on a tiny git + DVC repo whose one stage reads the source sees it;
The served retrain of tests/retrain_harness.py runs end to end in the documented layout
(`path: data/raw/reviews.csv`, untracked): tests/test_retrain_e2e.py.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import base_env
from flows.retrain.flow import local_copy_paths

GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

# name: (files committed to git, files written after the commit (untracked, or a tracked file changed),
#        the declared source, the expected `-C` paths)
# A source starting with "/" is made absolute (under the test's tmp_path, outside the repo).
LAYOUTS = {
    "file in an untracked folder": ({}, {"raw/x.csv": "a\n"}, "raw/x.csv", ["raw"]),
    "documented: data/raw, data/ tracked for DVC's .gitignore": (
        {"data/.gitignore": "/ingested.parquet\n"}, {"data/raw/reviews.csv": "r\n"}, "data/raw/reviews.csv", ["data/raw"]),
    "file three untracked folders deep": ({}, {"a/b/c/x.csv": "deep\n"}, "a/b/c/x.csv", ["a"]),
    "untracked file in a tracked folder": ({"data/old.csv": "old\n"}, {"data/new.csv": "new\n"}, "data/new.csv", ["data/new.csv"]),
    "file git tracks, changed since the commit": ({"data/x.csv": "committed\n"}, {"data/x.csv": "changed\n"}, "data/x.csv", []),
    "untracked folder": ({}, {"corpus/a.txt": "a\n", "corpus/sub/b.txt": "b\n"}, "corpus", ["corpus"]),
    "tracked folder with untracked files": (
        {"corpus/a.txt": "a\n"}, {"corpus/b.txt": "b\n", "corpus/new/c.txt": "c\n"}, "corpus", ["corpus/b.txt", "corpus/new"]),
    "absolute path": ({}, {"/outside/x.csv": "abs\n"}, "/outside/x.csv", []),
    "spaces in the path": ({}, {"my data/sub dir/raw file.csv": "spaced\n"}, "my data/sub dir/raw file.csv", ["my data"]),
}

# The one stage: reads every file of the source (a file or a folder) into out.json, which the
# experiment commits (cache: false), so the test reads what the stage saw in the temp copy.
READ_SOURCE = """\
import json, pathlib, sys
src = pathlib.Path(sys.argv[1])
files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
seen = {(p.relative_to(src).as_posix() if p != src else "."): p.read_text() for p in files}
pathlib.Path("out.json").write_text(json.dumps(seen, sort_keys=True))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, env={**base_env(repo), **GIT_ID}).stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def arrange(tmp: Path, repo: Path, layout: str) -> str:
    """Commit the layout's tracked files, leave the rest untracked; the declared source."""
    committed, untracked, source, _ = LAYOUTS[layout]
    write(repo, committed)
    if committed:
        git(repo, "add", "--", *committed)
        git(repo, "commit", "-qm", "tracked data")
    write(repo, {n: t for n, t in untracked.items() if not n.startswith("/")})
    write(tmp, {n: t for n, t in untracked.items() if n.startswith("/")})
    return str(tmp / source.lstrip("/")) if source.startswith("/") else source


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory) -> Path:
    """A git + DVC repo with the reading stage committed, copied by each test (dvc init once)."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=base_env(repo))
    (repo / "read_source.py").write_text(READ_SOURCE)
    (repo / "keep.txt").write_text("the repo tracks a file at its root\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def copy_of(template: Path, tmp: Path) -> Path:
    repo = tmp / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo


# ---------------------------------------------------------------- (a) the paths named


@pytest.mark.parametrize("layout", LAYOUTS)
def test_local_copy_paths_names_the_shallowest_untracked_path(layout: str, tmp_path: Path, dvc_template: Path) -> None:
    repo = copy_of(dvc_template, tmp_path)
    source = arrange(tmp_path, repo, layout)
    assert local_copy_paths(repo, [source]) == LAYOUTS[layout][3]


def test_local_copy_paths_dedupes_and_skips_what_needs_no_copy(tmp_path: Path, dvc_template: Path) -> None:
    repo = copy_of(dvc_template, tmp_path)
    write(repo, {"raw/x.csv": "x\n", "raw/y.csv": "y\n", "raw/sub/z.csv": "z\n", "data/.gitignore": "/raw\n", "data/raw/r.csv": "r\n"})
    git(repo, "add", "data/.gitignore")
    git(repo, "commit", "-qm", "data/ ignores raw/")
    sources = ["raw/x.csv", "./raw/y.csv", "raw", "raw/sub", "data/raw/r.csv",  # one folder, named many ways; a git-ignored file
               "https://example.org/data.csv", "s3://bucket/data.csv", "missing/file.csv", "../outside.csv", "."]
    assert local_copy_paths(repo, sources) == ["data/raw", "raw"]
    assert local_copy_paths(repo, []) == []


# ---------------------------------------------------------------- (b) DVC finds it in its temp copy


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dvc_exp_run_temp_finds_the_source(layout: str, tmp_path: Path, dvc_template: Path) -> None:
    repo = copy_of(dvc_template, tmp_path)
    source = arrange(tmp_path, repo, layout)
    stage = {"cmd": f"{shlex.quote(sys.executable)} read_source.py {shlex.quote(source)}",
             "deps": ["read_source.py", source], "metrics": [{"out.json": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"read": stage}}))
    git(repo, "add", "dvc.yaml")
    git(repo, "commit", "-qm", "the stage")
    where = Path(source) if Path(source).is_absolute() else repo / source
    expected = {"." if p == where else p.relative_to(where).as_posix(): p.read_text()
                for p in ([where] if where.is_file() else where.rglob("*")) if p.is_file()}

    copy = [a for p in local_copy_paths(repo, [source]) for a in ("-C", p)]
    run = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", "layout", *copy], cwd=repo,
                         capture_output=True, text=True, timeout=300, env={**base_env(repo), **GIT_ID})
    assert run.returncode == 0, f"dvc exp run --temp {' '.join(copy)} exited {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    exp = git(repo, "for-each-ref", "refs/exps", "--format=%(objectname)").split()
    assert len(exp) == 1, exp
    assert json.loads(git(repo, "show", f"{exp[0]}:out.json")) == expected  # the workspace's bytes, as the stage read them
    assert not (repo / "out.json").exists()  # the workspace (the champion) was not touched
