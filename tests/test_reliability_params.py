"""A typo'd or out-of-range params.yaml fails before any work, naming the key and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import deep_update
from reweigh.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def write_params(tmp_path: Path, update: dict) -> Path:
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), update)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_repository_params_are_valid():
    load_params(ROOT / "params.yaml")


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        # unknown tokenizer kind: the key and every allowed value
        ({"tokenize": {"kind": "sentencepiece"}}, ["tokenize.kind", "'word'", "'bpe'", "'wordpiece'", "'char'", "sentencepiece"]),
        # negative vocabulary
        ({"tokenize": {"vocab_size": -5}}, ["tokenize.vocab_size", "greater than 2", "-5"]),
        # attention heads that do not divide the GRU output width (2 x 30 = 60)
        ({"model": {"gru_attention": {"hidden_size": 30, "heads": 7}}}, ["model.gru_attention", "heads=7 must divide", "60"]),
        # a typo'd key is not silently ignored
        ({"tokenize": {"vocab_sise": 8000}}, ["tokenize.vocab_sise", "unknown key"]),
        ({"trian": {"epochs": 3}}, ["trian", "unknown key"]),
        # out of range elsewhere
        ({"dataset": {"val_fraction": 1.5}}, ["dataset.val_fraction", "less than 1"]),
        ({"clean": {"steps": ["lowercase", "strip_html"]}}, ["clean.steps.1", "'strip_markup'", "strip_html"]),
        ({"train": {"device": "tpu"}}, ["train.device", "'auto'", "'cpu'", "'cuda'"]),
        ({"train": {"epochs": 0}}, ["train.epochs", "greater than or equal to 1"]),
        # five fields, but a minute of 99: Prefect's own CronSchedule refuses it, so params.yaml does too
        ({"retrain": {"cron": "99 3 * * *"}}, ["retrain.cron", "Invalid cron string", "minute (0-59)"]),
        ({"retrain": {"timezone": "Mars/Base"}}, ["retrain.timezone", "Invalid timezone", "IANA"]),
        ({"retrain": {"drift": {"block": ["label_shfit"]}}}, ["retrain.drift.block.0", "'label_conflicts'", "label_shfit"]),
    ],
    ids=["tokenizer-kind", "negative-vocab", "heads-divide", "typo-key", "typo-section", "val-fraction", "clean-step", "device", "epochs",
         "cron-minute", "timezone", "drift-block"],
)
def test_bad_value_names_the_key_and_the_allowed_values(tmp_path, update, expected):
    with pytest.raises(ParamsError) as info:
        load_params(write_params(tmp_path, update))
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_every_bad_value_is_reported_at_once(tmp_path):
    path = write_params(tmp_path, {"tokenize": {"kind": "nope", "vocab_size": 0}, "train": {"lr": -1}})
    with pytest.raises(ParamsError, match=r"3 invalid value\(s\)") as info:
        load_params(path)
    assert all(key in str(info.value) for key in ("tokenize.kind", "tokenize.vocab_size", "train.lr"))


@pytest.mark.parametrize(("text", "expected"), [("seed: [1,\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping")])
def test_unreadable_params_file(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=expected):
        load_params(path)


def test_a_stage_fails_before_any_work(project):
    """`python -m flows.<stage>` checks params first: exit 1, the key in the message, no output written,
    and no traceback (Prefect never starts)."""
    project.set_params({"tokenize": {"kind": "sentencepiece"}})
    for stage in ("ingest", "tokenize"):
        result = project.run("python", "-m", f"flows.{stage}", check=False, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "tokenize.kind" in result.stderr and "'wordpiece'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
    assert not (project.path / "data").exists() and not (project.path / "reports").exists()
