"""A plugin adapter: a separate tiny package, really installed, registering itself in the group `reweigh.adapters`.

The package is built and installed offline (`pip install --no-deps --no-build-isolation --target DIR`), then
a fresh interpreter with DIR on its path finds it through importlib.metadata, by name.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "reweigh-demo-plugin"
version = "0.1.0"

[project.entry-points."reweigh.adapters"]
demo_plugin = "reweigh_demo_plugin:DemoAdapter"
broken_plugin = "reweigh_demo_plugin.missing:Nothing"

[tool.setuptools.packages.find]
where = ["src"]
"""

PACKAGE = '''
"""A dataset shipped as its own package: 24 short texts, two classes."""
from pathlib import Path

import polars as pl


class DemoAdapter:
    name = "demo_plugin"
    labels = ("cats", "dogs")

    def __init__(self, per_label: int = 12):
        self.per_label = per_label

    def load(self, cache_dir: Path) -> pl.DataFrame:
        rows = [(f"{label} text {i} purr" if label == "cats" else f"{label} text {i} bark", label,
                 "test" if i % 4 == 0 else "train") for label in self.labels for i in range(self.per_label)]
        return pl.DataFrame(rows, schema=["text", "label", "split"], orient="row")
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "src" / "reweigh_demo_plugin").mkdir(parents=True)
    (src / "src" / "reweigh_demo_plugin" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    assert list(site.glob("reweigh_demo_plugin-0.1.0.dist-info/entry_points.txt"))
    return site


def run_with(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "COLUMNS": "250"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_plugin_is_an_installed_distribution_found_by_name(plugin_site):
    probe = run_with(plugin_site, "-c", textwrap.dedent("""
        from importlib.metadata import distribution
        from adapters.registry import available, get_adapter
        dist = distribution("reweigh-demo-plugin")
        print("groups", sorted({ep.group for ep in dist.entry_points}))
        info = available()["demo_plugin"]
        print("origin", info.origin, info.where)
        adapter = get_adapter("demo_plugin", {"per_label": 8})
        print("adapter", type(adapter).__module__, adapter.labels, adapter.load(None).height)
    """))
    assert probe.returncode == 0, probe.stderr
    assert "groups ['reweigh.adapters']" in probe.stdout
    assert "origin plugin reweigh_demo_plugin:DemoAdapter" in probe.stdout
    assert "adapter reweigh_demo_plugin ('cats', 'dogs') 16" in probe.stdout


def test_cli_lists_and_validates_the_plugin(plugin_site):
    listed = run_with(plugin_site, "-m", "reweigh.cli", "adapters")
    assert listed.returncode == 0, listed.stderr
    rows = {cells[1].strip(): cells for line in listed.stdout.splitlines() if len(cells := line.split("│")) > 4 and cells[1].strip()}
    assert rows["demo_plugin"][2].strip() == "plugin" and rows["demo_plugin"][3].strip() == "cats, dogs"
    assert "could not be loaded" in rows["broken_plugin"][3]  # one broken plugin is shown, not fatal to the listing
    assert {rows[k][2].strip() for k in rows if k.split()[0] in ("imdb", "table")} == {"built-in"}

    checked = run_with(plugin_site, "-m", "reweigh.cli", "validate", "demo_plugin")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "dataset 'demo_plugin' passed" in checked.stdout


def test_a_broken_plugin_names_its_package(plugin_site):
    result = run_with(plugin_site, "-m", "reweigh.cli", "validate", "broken_plugin")
    assert result.returncode == 1
    message = " ".join(result.stdout.split())
    assert "plugin adapter 'broken_plugin' (reweigh_demo_plugin.missing:Nothing, from reweigh-demo-plugin) could not be loaded" in message
    assert "ModuleNotFoundError" in message
