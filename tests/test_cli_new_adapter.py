"""`reweigh new-adapter` as a user meets it: scaffold, see the generated test fail, fill in load, see it pass.

(Undeclared labels and the other failures the generated test can report: test_adapters_validation.py.)
"""
from __future__ import annotations

import sys

from conftest import make_project

FILLED_LOAD = '''        rows = [line.split("\\t") for line in (self.root / "notes.tsv").read_text().splitlines()]
        return pl.DataFrame(rows, schema=["text", "label", "split"], orient="row")
'''


def test_scaffolded_adapter_passes_its_test_once_load_is_filled_in(tmp_path):
    project = make_project(tmp_path)
    cli = (sys.executable, "-m", "reweigh.cli")
    project.run(*cli, "new-adapter", "field_notes", "--labels", "bird,insect")
    module = project.path / "adapters" / "field_notes.py"
    test = project.path / "tests" / "test_adapter_field_notes.py"
    assert module.is_file() and test.is_file()

    listed = project.run(*cli, "adapters", "--params", "absent.yaml")
    assert "field_notes" in listed.stdout and "local" in listed.stdout and "bird, insect" in listed.stdout

    # Not filled in yet: the generated test fails and says what to do.
    data = project.path / "data" / "raw" / "field_notes"
    data.mkdir(parents=True)
    unfilled = project.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test), check=False)
    assert unfilled.returncode == 1
    assert "load() is not written yet: fill it in, in adapters/field_notes.py" in unfilled.stdout

    # The user writes load() (here: a TSV of text, label, split) ...
    source = module.read_text()
    todo_start = source.index("        # TODO: read the files")
    source = source[:todo_start] + FILLED_LOAD
    module.write_text(source)
    lines = [f"{'wings feathers song' if i % 2 else 'six legs antenna'} seen at dawn {i}\t{'bird' if i % 2 else 'insect'}\t{'test' if i % 5 == 0 else 'train'}"
             for i in range(40)]
    (data / "notes.tsv").write_text("\n".join(lines) + "\n")

    # ... and the generated test passes: found by name, right columns, the GX suite.
    filled = project.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test), check=False)
    assert filled.returncode == 0, filled.stdout[-3000:]
    assert "2 passed" in filled.stdout
