"""The Prefect UI in a real browser: headless Debian Chromium, driven by Playwright (no browser download).

It opens the UI of the server the harness started (tests/retrain_harness.py), finds the retrain
deployment with its cron schedule, the run started with custom parameters and its logs, the run whose
challenger was not promoted (a Failed state, "not promoted: …") and its decision artifact, and saves screenshots under build/test-output/browser/ (REWEIGH_TEST_OUTPUT overrides).
`make test` installs Debian's chromium when /usr/bin/chromium is missing; in CI (CI set) a missing
browser fails this test, elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from retrain_harness import DEPLOYMENT, OUTPUT, Served, served_retrain  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = os.environ.get("REWEIGH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network: no background calls home, no sandbox as root, a fresh profile per run.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = OUTPUT / "browser"
TIMEOUT_MS = 60_000


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def page(tmp_path):
    _need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed: pip install -e '.[test]'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a new, empty --user-data-dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 1000}, timeout=TIMEOUT_MS,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def _shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_ui_shows_deployment_schedule_run_logs_and_artifact(served_retrain: Served, page) -> None:
    try:
        _walk_through_the_ui(served_retrain, page)
    except Exception:
        _shot(page, "failure")  # what the browser showed when a check failed
        raise


def _walk_through_the_ui(served_retrain: Served, page) -> None:
    run = served_retrain.flow_run  # the run with custom parameters, promoted
    rejected = served_retrain.runs["corrupted"]  # the run whose challenger was worse: Failed, not promoted
    assert run["state_type"] == "COMPLETED", run["state"]
    ui = served_retrain.ui

    # the deployments list: our deployment, with its schedule
    page.goto(f"{ui}/deployments")
    page.get_by_text(DEPLOYMENT).first.wait_for()
    _shot(page, "1-deployments")

    # the deployment page: its cron schedule (shown in words) and its runs, the rejected one flagged
    page.goto(f"{ui}/deployments/deployment/{served_retrain.deployment_id}")
    page.get_by_text(re.compile(r"At 03:00 AM|0 3 \* \* \*")).first.wait_for()
    page.get_by_text(rejected["name"]).first.wait_for()
    page.get_by_text("Failed").first.wait_for()
    page.get_by_text("not-promoted").first.wait_for()  # the outcome tag, in the run list without opening the run
    page.get_by_text("blocked", exact=True).first.wait_for()
    _shot(page, "2-deployment-schedule-runs")

    # the flow run with custom parameters: completed, the DVC steps in its logs
    page.goto(f"{ui}/runs/flow-run/{run['id']}")
    page.get_by_text("Completed").first.wait_for()
    page.get_by_text("-S tokenize.vocab_size=20").first.wait_for()
    _shot(page, "3-flow-run-logs")

    # the rejected run: its state says why it needs a person
    page.goto(f"{ui}/runs/flow-run/{rejected['id']}")
    page.get_by_text("Failed", exact=True).first.wait_for()  # red, in the failed-runs views
    _shot(page, "4-rejected-run")

    # its decision artifact: the rule, both judgements, the drift table, the rows added, the metrics that changed
    artifact = next(a for a in served_retrain.artifacts("retrain-report") if a["flow_run_id"] == rejected["id"])
    page.goto(f"{ui}/artifacts/artifact/{artifact['id']}")
    page.get_by_text(re.compile(r"NOT promoted")).first.wait_for()
    page.get_by_text(re.compile(r"On the reference set: the challenger FAILS")).first.wait_for()
    page.get_by_text(re.compile(r"Drift: the champion's data")).first.wait_for()
    page.get_by_text("What changed in the data").first.wait_for()
    artifact_shot = _shot(page, "5-decision-artifact")

    # one picture for the docs: the deployment with its schedule and runs, above the decision artifact
    _stack([SHOTS / "2-deployment-schedule-runs.png", artifact_shot], SHOTS / "prefect-ui.png")


def _stack(images: list[Path], out: Path) -> None:
    from PIL import Image

    opened = [Image.open(p).convert("RGB") for p in images]
    canvas = Image.new("RGB", (max(i.width for i in opened), sum(i.height for i in opened)), "white")
    top = 0
    for image in opened:
        canvas.paste(image, (0, top))
        top += image.height
    canvas.save(out, optimize=True)
    assert out.stat().st_size > 50_000
