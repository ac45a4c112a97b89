"""`reweigh new-adapter NAME`: write a starting adapter module and its test, ready for `load` to be filled in.

The module goes to adapters/NAME.py (found by name, no registration), the test to tests/test_adapter_NAME.py.
The test checks what the pipeline will check: the adapter is found, its table has the right shape, and it
passes the GX suite; it fails with the instruction to fill in `load` until that is done.
"""
from __future__ import annotations

import keyword
import re
from pathlib import Path

from adapters.base import AdapterError
from adapters.registry import _INFRASTRUCTURE

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = _INFRASTRUCTURE | {"imdb", "table"}

MODULE_TEMPLATE = '''"""Dataset adapter `{name}`: TODO one line on what the dataset is and where it comes from.

Select it in params.yaml, then check it alone before running the pipeline:

    dataset:
      name: {name}
      options:                       # the keyword arguments of __init__ below
        root: data/raw/{name}

    reweigh validate {name}          # load + the GX suite, a readable report
    pytest tests/test_adapter_{name}.py
    dvc repro                        # the whole pipeline

See docs/adapters.md for the protocol and the expectations every adapter must pass.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from adapters.base import AdapterError


class {cls}:
    name = "{name}"
    labels = {labels!r}  # class names in class-id order; every label in the data must be one of these

    def __init__(self, root: str = "data/raw/{name}", test_fraction: float = 0.2, seed: int = 0) -> None:
        self.root = Path(root)
        self.test_fraction = test_fraction  # use these if your data has no test split of its own:
        self.seed = seed  # reweigh.splits.stratified_split(df["label"], test_fraction, seed, "test", "train")

    def sources(self) -> list[str]:
        """What load() reads: files, folders or http(s) URLs. `dvc repro` reruns ingest when one changes."""
        return [str(self.root)]

    def load(self, cache_dir: Path) -> pl.DataFrame:
        """One row per document: text (str), label (one of `labels`; null only in split unsup), split
        (train / test / unsup). Extra columns (e.g. an `id`) are kept. `cache_dir` is for downloads."""
        if not self.root.exists():
            raise AdapterError(f"dataset '{name}': {{self.root}} does not exist; put the data there or set dataset.options.root")
        # TODO: read the files under self.root, e.g.
        #   rows = {{"text": [...], "label": [...], "split": [...]}}
        #   return pl.DataFrame(rows, schema={{"text": pl.String, "label": pl.String, "split": pl.String}})
        raise AdapterError("dataset '{name}': load() is not written yet: fill it in, in adapters/{name}.py")
'''

TEST_TEMPLATE = '''"""The adapter `{name}` passes what ingest checks: found by name, the right columns, the GX suite."""
from pathlib import Path

import yaml

from adapters.base import check_frame, collect
from adapters.expectations import validate
from adapters.inspection import explain
from adapters.registry import get_adapter

NAME = "{name}"


def options() -> dict:
    """dataset.options from params.yaml when it selects this adapter, else the adapter's defaults."""
    params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").exists() else {{}}
    dataset = (params or {{}}).get("dataset") or {{}}
    return (dataset.get("options") or {{}}) if dataset.get("name") == NAME else {{}}


def test_{name}_is_found_by_name():
    adapter = get_adapter(NAME, options())
    assert adapter.name == NAME and len(adapter.labels) >= 2


def test_{name}_passes_validation(tmp_path):
    adapter = get_adapter(NAME, options())
    df = collect(check_frame(adapter.load(tmp_path / "cache"), adapter.name), adapter.name)
    report = validate(df, adapter)
    assert report.success, explain(report)
'''


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) + "Adapter"


def check_name(name: str) -> None:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise AdapterError(f"adapter name '{name}' must be a lowercase Python identifier (letters, digits, _), e.g. 'news_topics'")
    if name in _RESERVED:
        raise AdapterError(f"adapter name '{name}' is taken by reweigh itself ({', '.join(sorted(_RESERVED))}); choose another")


def write_adapter(name: str, root: Path = Path("."), labels: tuple[str, ...] = ("neg", "pos"), force: bool = False) -> tuple[Path, Path]:
    """Write adapters/NAME.py and tests/test_adapter_NAME.py under project `root`; refuse to overwrite unless `force`."""
    check_name(name)
    labels = tuple(label.strip() for label in labels if label.strip())
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise AdapterError(f"--labels needs at least two distinct class names, got {labels}")
    root = Path(root)
    if not (root / "adapters").is_dir():
        raise AdapterError(f"{root.resolve()} has no adapters/ folder: run this from the project root (or pass --root)")
    module = root / "adapters" / f"{name}.py"
    test = root / "tests" / f"test_adapter_{name}.py"
    existing = [str(p) for p in (module, test) if p.exists()]
    if existing and not force:
        raise AdapterError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    test.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(MODULE_TEMPLATE.format(name=name, cls=class_name(name), labels=labels))
    test.write_text(TEST_TEMPLATE.format(name=name))
    return module, test
