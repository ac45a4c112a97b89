"""Shared fixtures: small datasets the tests build themselves, and throwaway project checkouts.

Nothing here mocks Prefect, DVC, GX or torch: tests run the real flows, `dvc repro`, GX validation and
training, on data small enough to take seconds.
"""
from __future__ import annotations

import io
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

# In-process flows keep their state in a temp PREFECT_HOME, never the user's ~/.prefect; set before
# anything imports prefect (its settings are read once).
os.environ["PREFECT_HOME"] = str(Path(__import__("tempfile").mkdtemp(prefix="reweigh-prefect-")))
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

ROOT = Path(__file__).resolve().parents[1]
# What a project checkout needs to run the pipeline (everything tracked, minus outputs).
PROJECT_FILES = ["adapters", "flows", "models", "reweigh", "dvc.yaml", "params.yaml", "pyproject.toml"]

POSITIVE = "great wonderful superb loved brilliant moving charming delightful masterpiece excellent".split()
NEGATIVE = "awful terrible boring hated dreadful dull mess waste horrible worst".split()
NEUTRAL = ("the a film movie plot actor story scene it was and of to this that with director cast "
           "character ending music script time watch people").split()


def review(rng: random.Random, label: str, words: int = 40) -> str:
    """A synthetic review whose sentiment words carry the label, with IMDB's markup and entities."""
    cue = POSITIVE if label == "pos" else NEGATIVE if label == "neg" else POSITIVE + NEGATIVE
    tokens = [rng.choice(cue) if rng.random() < 0.2 else rng.choice(NEUTRAL) for _ in range(words)]
    tokens[0] = tokens[0].capitalize()
    text = " ".join(tokens)
    cut = rng.randrange(5, words)
    return f"{text[:cut]}.<br /><br />{text[cut:]} &amp; more!"


def make_imdb_archive(path: Path, n_per_label: int = 60, n_unsup: int = 40, seed: int = 0,
                      extra_members: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> Path:
    """An archive in the official aclImdb layout: {train,test}/{pos,neg}/<id>_<rating>.txt, train/unsup."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"synthetic test archive\n")
        for split in ("train", "test"):
            for label in ("pos", "neg"):
                for i in range(n_per_label):
                    rating = rng.choice([7, 8, 9, 10] if label == "pos" else [1, 2, 3, 4])
                    add(f"aclImdb/{split}/{label}/{i}_{rating}.txt", review(rng, label).encode())
        for i in range(n_unsup):
            add(f"aclImdb/train/unsup/{i}_0.txt", review(rng, "unsup").encode())
        for info, data in extra_members or []:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


SMALL_PARAMS = {
    "dataset": {"name": "imdb", "limit": 0, "options": {"include_unsup": True, "verify_counts": False}},
    "tokenize": {"kind": "word", "vocab_size": 200, "min_frequency": 1, "max_length": 64},
    "pretrain": {"dim": 16, "hidden_size": 16, "lm_max_length": 32},
    "train": {"batch_size": 16, "epochs": 2, "patience": 2, "threads": 1},
    "model": {
        "gru": {"embedding_dim": 16, "hidden_size": 16},
        "gru_attention": {"embedding_dim": 16, "hidden_size": 16, "heads": 2},
    },
    "baseline": {"tfidf_lr": {"ngram_max": 1, "min_df": 1, "max_features": 1000}},
}


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


class Project:
    """A throwaway copy of the project (git + DVC repo) with its own params and environment."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env

    def set_params(self, update: dict) -> None:
        params_file = self.path / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params_file.write_text(yaml.safe_dump(deep_update(params, update), sort_keys=False))

    def replace_section(self, name: str, value: dict) -> None:
        """Set a whole top-level params section (no merging with what was there)."""
        params_file = self.path / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params[name] = value
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
        return result

    def dvc(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, timeout=timeout)


_SERVER: dict[str, str] = {}


def prefect_api() -> str:
    """One `prefect server start` for this test process (stopped at exit): its API URL.

    Stage commands given its PREFECT_API_URL skip starting a temporary server each (5-10 s per stage on
    this 2-core machine, dozens of stage runs in the suite), and run as they do for a user who has
    `prefect server start` up. With pytest-xdist each worker process has its own.
    """
    if "url" not in _SERVER:
        import atexit
        import contextlib
        import tempfile

        from reweigh.prefect_server import prefect_server

        stack = contextlib.ExitStack()
        _SERVER["url"] = stack.enter_context(prefect_server(Path(tempfile.mkdtemp(prefix="reweigh-prefect-server-"))))
        atexit.register(stack.close)
    return _SERVER["url"]


def base_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "REWEIGH_CACHE": str(tmp / "cache"),
        # stage commands (`python -m flows.x`) must find this interpreter and its packages
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(tmp / "project"),
    })
    env.pop("REWEIGH_IMDB_ARCHIVE", None)
    env.pop("PREFECT_API_URL", None)
    return env


_CODE: dict[str, Path] = {}


def _compiled_code() -> Path:
    """PROJECT_FILES copied once per test process, byte-compiled. A stage command imports the project's code
    from its copy: without __pycache__ (git ignores it; this machine sets PYTHONDONTWRITEBYTECODE, so none
    is written) every stage of every test's `dvc repro` compiled flows/, models/, adapters/ and reweigh/ again,
    about a second each. copy2 keeps the sources' times, so the .pyc files stay valid in each copy."""
    if "path" not in _CODE:
        import compileall
        import tempfile

        code = Path(tempfile.mkdtemp(prefix="reweigh-code-"))
        for name in PROJECT_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                compileall.compile_dir(code / name, quiet=1)
            elif src.exists():
                shutil.copy2(src, code / name)
        _CODE["path"] = code
    return _CODE["path"]


def make_project(tmp: Path, params_update: dict | None = None, prefect_server: bool = True) -> Project:
    """Copy the project's code into tmp/project, make it a git + DVC repo, apply small params.

    Its stages report to the test process's shared Prefect server; `prefect_server=False` leaves each
    stage to start its own temporary one, as a plain `dvc repro` without a server does."""
    dest = tmp / "project"
    dest.mkdir(parents=True)
    code = _compiled_code()
    for name in PROJECT_FILES:
        src = code / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    project = Project(dest, base_env(tmp))
    if prefect_server:
        project.env["PREFECT_API_URL"] = prefect_api()
    project.set_params(deep_update(yaml.safe_load(yaml.safe_dump(SMALL_PARAMS)), params_update or {}))
    project.run("git", "init", "-q")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return project


@pytest.fixture(scope="session")
def imdb_archive(tmp_path_factory) -> Path:
    return make_imdb_archive(tmp_path_factory.mktemp("imdb") / "aclImdb_v1.tar.gz")


@pytest.fixture
def project(tmp_path, imdb_archive) -> Project:
    """A small IMDB project: the archive is named in params (dataset.options.archive)."""
    return make_project(tmp_path, {"dataset": {"options": {"archive": str(imdb_archive)}}})


GUIDE = ROOT / "docs" / "adapters.md"


def guide_example(marker: str) -> str:
    """A code block of docs/adapters.md, found by the `<!-- example: MARKER -->` comment above it."""
    found = re.search(rf"<!-- example: {re.escape(marker)} -->\s*```\w*\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"docs/adapters.md has no example block marked {marker!r}"
    return found.group(1)


def select_dataset(project: Project, block: str) -> None:
    """Replace params.yaml's dataset.name and dataset.options with the guide's, as a user edits them."""
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["dataset"].update(yaml.safe_load(block)["dataset"])
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session", autouse=True)
def _stop_temporary_prefect_servers():
    """While pytest's output is still open: Prefect's own stop at exit would log a traceback after the summary."""
    yield
    from flows.common import stop_temporary_prefect_servers

    stop_temporary_prefect_servers()


# The served-retrain harness's setup (a server, a baseline repro and five retrains): 13 min here, over 15 in
# one CI run; its own waits are bounded (a run 600 s, a start 180 s), so this only has to exceed them.
HARNESS_BUDGET_S = 2400


def _served_files() -> set[str]:
    """The test files that use the served-retrain harness (tests/retrain_harness.py)."""
    return {p.name for p in Path(__file__).parent.glob("test_*.py") if "served_retrain" in p.read_text()}


def pytest_xdist_make_scheduler(config, log):
    """`make test` gives each of its two workers whole test files (--dist loadfile), and every file that uses the
    served-retrain harness (a session fixture of several minutes) to the same worker, so that one worker builds
    it, not both. (pytest-xdist's own grouping, --dist loadgroup, does not group with pytest 9.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    served = _served_files()
    # Hand out files in collection order (longest first, pytest_collection_modifyitems), not xdist's default of
    # most tests first: that put the one-test benchmark last, five minutes alone on one worker at the end.
    config.option.loadscopereorder = False

    class FilesServedTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "served_retrain" if Path(file).name in served else file

    return FilesServedTogether(config, log)


def pytest_collection_modifyitems(session, config, items):
    """Longest first: the quick benchmark or the served-retrain harness started last would leave the other
    worker idle while it runs alone."""
    served = _served_files()
    # pytest-timeout counts a test's fixture setup: whichever harness test runs first pays for the whole
    # harness (13 min here, over 15 in one CI run), on top of its own limit.
    default = float(config.getini("timeout") or 0)
    for item in items:
        if "served_retrain" in getattr(item, "fixturenames", ()):
            marker = item.get_closest_marker("timeout")
            own = float(marker.args[0]) if marker and marker.args else default
            item.add_marker(pytest.mark.timeout(own + HARNESS_BUDGET_S), append=False)

    def rank(item) -> int:
        if item.path.name == "test_bench.py" or item.path.name in served:
            return 0
        return 1 if item.get_closest_marker("slow") else 2
    items.sort(key=rank)
