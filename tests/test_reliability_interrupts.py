"""`dvc repro` killed in the middle of a stage: no half file, the old outputs restorable, the next run finishes.

To kill at a chosen moment, not a random one, the killed run gets a `sitecustomize` that wraps
`reweigh.io.atomic_path`: when it is about to publish the output named by REWEIGH_TEST_STALL_AT (the
temporary file fully written, the rename not yet done), or just after publishing its nth version (a
training checkpoint), it touches a marker file and sleeps; the test then SIGKILLs the whole process group
(dvc and the stage command below it). Nothing else in the code under test is changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

STALL_HOOK = textwrap.dedent('''
    """Test hook (tests/test_reliability_interrupts.py): stall before/after publishing one output."""
    import os
    if os.environ.get("REWEIGH_TEST_STALL_AT"):
        import time
        from contextlib import contextmanager
        from pathlib import Path

        import reweigh.io as _io

        _original = _io.atomic_path
        _seen = {"n": 0}

        @contextmanager
        def atomic_path(target):
            stall = Path(target).name == os.environ["REWEIGH_TEST_STALL_AT"]
            if stall:
                _seen["n"] += 1
                stall = _seen["n"] == int(os.environ.get("REWEIGH_TEST_STALL_NTH", "1"))
            with _original(target) as tmp:
                yield tmp
                if stall and os.environ.get("REWEIGH_TEST_STALL_WHEN", "before") == "before":
                    Path(os.environ["REWEIGH_TEST_STALL_MARKER"]).write_text(str(tmp))
                    time.sleep(900)
            if stall:
                Path(os.environ["REWEIGH_TEST_STALL_MARKER"]).write_text(str(target))
                time.sleep(900)

        _io.atomic_path = atomic_path
''')


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def kill_while_publishing(project, tmp_path: Path, output: str, *args: str, nth: int = 1, when: str = "before", timeout: float = 240) -> None:
    """Run `dvc repro ARGS` until the stage is about to publish `output` (its nth write), then SIGKILL it all."""
    hook = tmp_path / "stall-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(STALL_HOOK)
    marker = tmp_path / f"stalled-{output}-{nth}"
    env = {
        **project.env,
        "PYTHONPATH": f"{hook}{os.pathsep}{project.env['PYTHONPATH']}",
        "REWEIGH_TEST_STALL_AT": output,
        "REWEIGH_TEST_STALL_NTH": str(nth),
        "REWEIGH_TEST_STALL_WHEN": when,
        "REWEIGH_TEST_STALL_MARKER": str(marker),
    }
    log = (tmp_path / "killed-run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *args], cwd=project.path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"dvc repro ended ({proc.returncode}) before the stall:\n{(tmp_path / 'killed-run.log').read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no stall within {timeout} s:\n{(tmp_path / 'killed-run.log').read_text()[-4000:]}")
            time.sleep(0.2)
    finally:
        # Our own processes only: the dvc we started and everything below it (its session / group).
        family = [proc]
        try:
            family += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in family[1:]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)
        log.close()


def test_kill_during_tokenize(project, tmp_path):
    p = project.path
    outs = {name: p / name for name in ("artifacts/tokenizer.json", "data/tokens.parquet")}
    project.dvc("repro", "tokenize")
    old = {name: sha(path) for name, path in outs.items()}
    lock = (p / "dvc.lock").read_text()

    # A changed param reruns tokenize; kill it with the tokenizer published and the token table written
    # to its temporary file but not yet renamed into place.
    project.set_params({"tokenize": {"vocab_size": 150}})
    kill_while_publishing(project, tmp_path, "tokens.parquet", "tokenize")

    # What the tool gives: DVC removed the stage's outputs before running it, so each output is absent or
    # a complete file (here the new tokenizer, published before the kill); never a half-written one.
    assert not outs["data/tokens.parquet"].exists()
    tokenizer = json.loads(outs["artifacts/tokenizer.json"].read_text())  # whole, parseable
    assert tokenizer["model"]["type"] == "WordLevel"
    assert (p / "data/.tokens.parquet.tmp").exists()  # the killed write's temporary file: hidden, never read
    report = p / "reports/tokenize.json"  # a `cache: false` metric: deleted by DVC before the run too
    assert not report.exists() or json.loads(report.read_text())
    assert (p / "dvc.lock").read_text() == lock  # the last complete run is still what is recorded
    status = project.dvc("status", "tokenize", "--json")
    assert "tokenize" in json.loads(status.stdout)

    # The previous complete outputs come back from the cache...
    project.dvc("checkout", "--force", "tokenize")
    assert {name: sha(path) for name, path in outs.items()} == old
    # ...and the next `dvc repro` finishes the stage (and replaces the killed run's temporary file).
    project.dvc("repro", "tokenize")
    assert json.loads(project.dvc("status", "tokenize", "--json").stdout) == {}
    assert outs["data/tokens.parquet"].exists() and sha(outs["data/tokens.parquet"]) != old["data/tokens.parquet"]
    assert json.loads((p / "reports/tokenize.json").read_text())["vocab_size"] <= 150
    assert not (p / "data/.tokens.parquet.tmp").exists()


def test_kill_during_training_then_resume_from_the_checkpoint(project, tmp_path):
    """A training run killed after epoch 2's checkpoint: no model file, dvc.lock as before, the previous
    model restorable; with `train.resume: true` the next `dvc repro` continues after epoch 2 and ends with
    exactly the weights and predictions of an uninterrupted run."""
    import torch

    p = project.path
    stage = "train@gru"
    model, predictions, history = p / "artifacts/gru.pt", p / "data/predictions/gru.parquet", p / "reports/train/gru.json"
    checkpoint = p / "artifacts/checkpoints/gru.ckpt"
    project.set_params({"train": {"epochs": 3, "patience": 3}})
    project.dvc("repro", stage)
    uninterrupted = json.loads(history.read_text())
    assert uninterrupted["epochs"] == 3 and uninterrupted["resumed_from_epoch"] == 0
    old_model, old_predictions, lock = sha(model), sha(predictions), (p / "dvc.lock").read_text()

    # The same stage again from scratch, killed once epoch 2's checkpoint is on disk.
    kill_while_publishing(project, tmp_path, "gru.ckpt", "--force", "--single-item", stage, nth=2, when="after")
    assert not model.exists() and not predictions.exists()  # deleted by DVC before the run; never half-written
    assert not list(p.glob("artifacts/.gru.pt*")) and not list(p.glob("data/predictions/.gru.parquet*"))
    assert (p / "dvc.lock").read_text() == lock
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["epoch"] == 2  # whole, loadable

    project.dvc("checkout", "--force", stage)
    assert (sha(model), sha(predictions)) == (old_model, old_predictions)  # the previous outputs are restorable

    project.set_params({"train": {"resume": True}})
    project.dvc("repro", stage)
    resumed = json.loads(history.read_text())
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs"] == 3
    # Resuming gives what the uninterrupted run gave: same weights, same predictions, same history.
    assert (sha(model), sha(predictions)) == (old_model, old_predictions)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(resumed["history"]) == strip(uninterrupted["history"])
