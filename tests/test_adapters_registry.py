"""Finding adapters by name: built-ins, local modules in adapters/, and the errors a user meets on the way."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import adapters
from adapters.base import AdapterError
from adapters.registry import available, get_adapter


@pytest.fixture
def local_adapters(tmp_path, monkeypatch):
    """Write modules into an extra folder of the `adapters` package, as a user would into adapters/."""
    folder = tmp_path / "local_adapters"
    folder.mkdir()
    monkeypatch.setattr(adapters, "__path__", [*adapters.__path__, str(folder)])
    written: list[str] = []

    def write(module: str, source: str) -> Path:
        path = folder / f"{module}.py"
        path.write_text(textwrap.dedent(source))
        written.append(f"adapters.{module}")
        return path

    yield write
    for module in written:
        sys.modules.pop(module, None)


GOOD = """
    import polars as pl

    class GoodAdapter:
        name = "good"
        labels = ("a", "b")

        def __init__(self, n: int = 4):
            self.n = n

        def load(self, cache_dir):
            return pl.DataFrame({"text": ["x"] * self.n, "label": ["a", "b"] * (self.n // 2), "split": ["train", "test"] * (self.n // 2)})
"""


def test_builtins_are_found():
    found = available()
    assert {"imdb", "table"} <= set(found)
    assert found["imdb"].origin == "built-in" and found["imdb"].where == "adapters.imdb:ImdbAdapter"


def test_machinery_modules_are_not_adapters():
    machinery = ("adapters.scaffold:", "adapters.inspection:", "adapters.expectations:", "adapters.base:")
    assert [info.where for info in available().values() if info.where.startswith(machinery)] == []


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(AdapterError) as err:
        get_adapter("imbd")
    message = str(err.value)
    assert "no dataset adapter named 'imbd'" in message
    assert "imdb" in message and "table" in message
    assert "reweigh new-adapter imbd" in message and "reweigh.adapters" in message


def test_local_module_is_found_by_its_name_attribute(local_adapters):
    local_adapters("whatever_file_name", GOOD)
    info = available()["good"]
    assert info.origin == "local" and info.where == "adapters.whatever_file_name:GoodAdapter"
    adapter = get_adapter("good", {"n": 6})
    assert adapter.n == 6 and adapter.labels == ("a", "b")


def test_wrong_option_names_the_accepted_ones(local_adapters):
    local_adapters("good_mod", GOOD)
    with pytest.raises(AdapterError, match=r"dataset.options do not fit .*GoodAdapter.*Accepted options: n"):
        get_adapter("good", {"rows": 3})


def test_builtin_wins_a_name_clash(local_adapters):
    local_adapters("shadow", GOOD.replace('name = "good"', 'name = "table"'))
    assert available()["table"].origin == "built-in"


def test_missing_load_says_what_to_implement(local_adapters):
    local_adapters("no_load", """
        class NoLoadAdapter:
            name = "no_load"
            labels = ("a", "b")

            def read(self, cache_dir):  # misnamed
                return None
    """)
    assert "no_load" not in available()
    with pytest.raises(AdapterError) as err:
        get_adapter("no_load")
    assert "declares name 'no_load' but has no load() method" in str(err.value)
    assert "def load(self, cache_dir: Path)" in str(err.value)


def test_bad_labels_and_name_are_protocol_errors(local_adapters):
    local_adapters("bad_labels", """
        class OneLabel:
            name = "one_label"
            labels = ("only",)
            def load(self, cache_dir): ...

        class IntLabels:
            name = "int_labels"
            labels = (0, 1)
            def load(self, cache_dir): ...

        class DupLabels:
            name = "dup_labels"
            labels = ("a", "a")
            def load(self, cache_dir): ...

        class Renamed:
            name = "renamed"
            labels = ("a", "b")
            def __init__(self):
                self.name = "other"
            def load(self, cache_dir): ...
    """)
    for name in ("one_label", "int_labels"):
        with pytest.raises(AdapterError, match="set `labels` to a tuple of at least two class names"):
            get_adapter(name)
    with pytest.raises(AdapterError, match="`labels` has duplicates"):
        get_adapter("dup_labels")
    with pytest.raises(AdapterError, match="declares name 'other' but was registered as 'renamed'"):
        get_adapter("renamed")


def test_a_broken_module_is_named(local_adapters):
    local_adapters("broken", "class Broken(:\n    pass\n")
    with pytest.raises(AdapterError, match=r"adapters/broken.py could not be imported \(SyntaxError"):
        available()
