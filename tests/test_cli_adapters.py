"""`reweigh adapters`, `reweigh validate` and `reweigh new-adapter`, run in-process on small files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reweigh.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # rich wraps at the terminal width; keep one line per row in the captured output


def invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


def three_class_csv(path: Path, rows_per_label: int = 20, extra_lines: str = "") -> Path:
    rng = random.Random(0)
    words = {"negative": "awful broken refund", "neutral": "arrived works fine", "positive": "loved superb great"}
    lines = ["review,sentiment"]
    for label, cue in words.items():
        for i in range(rows_per_label):
            lines.append(f'"{rng.choice(cue.split())} item {i}, {rng.choice(cue.split())}",{label}')
    path.write_text("\n".join(lines) + "\n" + extra_lines)
    return path


def table_params(tmp_path: Path, csv: Path) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"dataset": {"name": "table", "options": {
        "path": str(csv), "text_column": "review", "label_column": "sentiment",
        "labels": ["negative", "neutral", "positive"]}}}))
    return params


def test_adapters_lists_builtins_with_labels(tmp_path):
    result = invoke("adapters", "--params", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 0, result.output
    imdb_line = next(line for line in result.output.splitlines() if " imdb " in line)
    assert "built-in" in imdb_line and "neg, pos" in imdb_line
    assert "adapters.table:TableAdapter" in result.output


def test_adapters_shows_the_selected_adapters_labels(tmp_path):
    params = table_params(tmp_path, three_class_csv(tmp_path / "three.csv"))
    result = invoke("adapters", "--params", str(params))
    assert result.exit_code == 0, result.output
    table_line = next(line for line in result.output.splitlines() if "table (selected)" in line)
    assert "negative, neutral, positive" in table_line


def test_validate_passes_a_good_table_and_writes_json_and_data_docs(tmp_path):
    params = table_params(tmp_path, three_class_csv(tmp_path / "three.csv"))
    result = invoke("validate", "--params", str(params), "--json", str(tmp_path / "v.json"), "--docs", str(tmp_path / "docs"))
    assert result.exit_code == 0, result.output
    assert "dataset 'three.csv' passed" in result.output and "dataset 'table'" not in result.output  # the file names the dataset
    assert "labels negative, neutral, positive" in result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["success"] and report["labels"] == ["negative", "neutral", "positive"]
    assert sum(report["counts"]["train"].values()) + sum(report["counts"]["test"].values()) == 60
    index = tmp_path / "docs" / "index.html"
    assert index.is_file() and list((tmp_path / "docs" / "validations").rglob("*.html"))


def test_validate_reports_failures_with_rows_and_what_to_change(tmp_path):
    csv = three_class_csv(tmp_path / "three.csv", extra_lines='"furious",angry\n,positive\n')
    params = table_params(tmp_path, csv)
    result = invoke("validate", "--params", str(params))
    assert result.exit_code == 1
    out = result.output
    assert "failed: expect_column_values_to_be_in_set on label: 1 row(s)" in out
    assert "'label': 'angry'" in out and "angry (undeclared)" in out
    assert "what to change: declare every class in the adapter's `labels`" in out
    assert "failed: expect_column_values_to_not_be_null on text: 1 row(s)" in out
    assert "dataset 'three.csv' FAILED" in out


def test_validate_options_on_the_command_line(tmp_path):
    csv = three_class_csv(tmp_path / "three.csv")
    result = invoke("validate", "table", "--params", str(tmp_path / "absent.yaml"), "-o", f"path={csv}",
                    "-o", "text_column=review", "-o", "label_column=sentiment", "-o", "test_fraction=0.5")
    assert result.exit_code == 0, result.output
    assert "'test_fraction': 0.5" in result.output  # YAML values: a float, not the string "0.5"


def test_validate_adapter_errors_are_one_readable_line(tmp_path):
    csv = three_class_csv(tmp_path / "three.csv")
    absent = str(tmp_path / "absent.yaml")
    cases = {
        ("validate", "tabel", "--params", absent): "no dataset adapter named 'tabel'. Known:",
        ("validate", "table", "--params", absent, "-o", f"path={csv}", "-o", "text_col=review"): "Accepted options: path, text_column",
        ("validate", "table", "--params", absent, "-o", f"path={csv}"): "missing ['text', 'label']",
        ("validate", "table", "--params", absent, "-o", "path"): "--option 'path': write KEY=VALUE",
        ("validate", "--params", absent): "name the adapter",
    }
    for args, expected in cases.items():
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "error:" in result.output and expected in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output


def test_new_adapter_writes_a_module_and_a_test(tmp_path):
    (tmp_path / "adapters").mkdir()
    result = invoke("new-adapter", "news_topics", "--labels", "business,science,sport", "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    module = (tmp_path / "adapters" / "news_topics.py").read_text()
    test = (tmp_path / "tests" / "test_adapter_news_topics.py").read_text()
    assert "class NewsTopicsAdapter:" in module and 'name = "news_topics"' in module
    assert "labels = ('business', 'science', 'sport')" in module
    assert 'NAME = "news_topics"' in test
    compile(module, "news_topics.py", "exec")
    compile(test, "test_adapter_news_topics.py", "exec")
    assert "reweigh validate news_topics" in result.output

    again = invoke("new-adapter", "news_topics", "--root", str(tmp_path))
    assert again.exit_code == 1 and "already exist" in again.output and "--force" in again.output
    assert invoke("new-adapter", "news_topics", "--root", str(tmp_path), "--force").exit_code == 0


@pytest.mark.parametrize(("name", "expected"), [
    ("News-Topics", "must be a lowercase Python identifier"),
    ("class", "must be a lowercase Python identifier"),
    ("table", "is taken by reweigh itself"),
    ("registry", "is taken by reweigh itself"),
])
def test_new_adapter_refuses_bad_names(tmp_path, name, expected):
    (tmp_path / "adapters").mkdir()
    result = invoke("new-adapter", name, "--root", str(tmp_path))
    assert result.exit_code == 1 and expected in result.output


def test_new_adapter_needs_the_project_root_and_two_labels(tmp_path):
    result = invoke("new-adapter", "mine", "--root", str(tmp_path))
    assert result.exit_code == 1 and "has no adapters/ folder" in result.output
    (tmp_path / "adapters").mkdir()
    result = invoke("new-adapter", "mine", "--labels", "only", "--root", str(tmp_path))
    assert result.exit_code == 1 and "at least two distinct class names" in result.output
