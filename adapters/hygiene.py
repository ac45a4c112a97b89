"""Data hygiene: texts shared between splits, label spellings, small classes; optional fixes for the first two.

The facts are computed in polars, vectorised (IMDB's 100k rows: ~0.5 s), as columns beside the table; GX
then checks those columns (adapters.expectations.run_suite), so the results join the validation report
with counts and sample rows. Every check is a warning: it is recorded and logged, and never stops a run.

- Texts are compared after the clean stage's steps (`clean.steps`, the same polars functions), so
  "Great film<br />" in train and "great film" in test are the same text. Unsup is never compared.
- `dedupe(df, mode)`: none | drop_overlap (the test copy of a text also in train, the val copy of a text
  also in train or test: train keeps all it has, test is the yardstick and only loses what leaked from
  train) | drop_all (also later copies within a split, first kept). The ingest stage calls it before and
  after carving val from train, see flows/ingest.py.
- `merge_label_spellings`: labels equal up to case and surrounding whitespace become one: the declared
  label they match, else their most frequent spelling, stripped.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from adapters.expectations import ExpectationResult, run_suite
from adapters.sampled import run_suite_sampled

DEDUPE_MODES = ("none", "drop_overlap", "drop_all")
# (the split that keeps its copy, the split whose copy is dropped by dedupe), in the order the drops apply.
PAIRS = (("train", "test"), ("train", "val"), ("test", "val"))
KEY = "_text_key"  # a 64-bit hash of the cleaned text (a false match needs a collision: ~1e-10 at 100k texts)
DEFAULT_MIN_CLASS_ROWS = 10


@dataclass(frozen=True)
class Hygiene:
    """The knobs, from params.yaml: dataset.dedupe / normalize_labels / min_class_rows and clean.steps."""

    clean_steps: tuple[str, ...] | None = None  # None: every clean step, in the stage's default order
    dedupe: str = "none"
    normalize_labels: bool = False
    min_class_rows: int = DEFAULT_MIN_CLASS_ROWS

    @classmethod
    def from_params(cls, dataset: Any, clean_steps: list[str] | None = None) -> Hygiene:
        """From params.yaml's `dataset` section (reweigh.params.DatasetParams) and `clean.steps`."""
        steps = None if clean_steps is None else tuple(clean_steps)
        return cls(steps, dataset.dedupe, dataset.normalize_labels, dataset.min_class_rows)


# ---- labels ---------------------------------------------------------------------------------------

def label_groups(labels: pl.Series, declared: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """{merged name: {spelling: rows}} for labels equal up to case and surrounding whitespace. The merged
    name is the declared label of that group, else its most frequent spelling (ties: first sorted), stripped."""
    by_key: dict[str, dict[str, int]] = {}
    for label, n in sorted(labels.drop_nulls().value_counts().iter_rows(), key=lambda r: (-r[1], r[0])):
        by_key.setdefault(_key(label), {})[label] = n
    named = {_key(label): label for label in declared}
    return {named.get(key, next(iter(spellings)).strip()): spellings for key, spellings in by_key.items()}


def _key(label: str) -> str:
    return label.strip().casefold()


def label_mapping(groups: dict[str, dict[str, int]]) -> dict[str, str]:
    """Every spelling that differs from its group's merged name → that name."""
    return {spelling: merged for merged, spellings in groups.items() for spelling in spellings if spelling != merged}


def merge_label_spellings(df: pl.DataFrame, adapter: Any) -> tuple[pl.DataFrame, Any, dict[str, str]]:
    """(`df` with merged labels, the adapter with merged labels, the mapping applied). An adapter whose labels
    come from the data (`labels_inferred = True`, the table adapter without dataset.options.labels) gets the
    merged names, sorted; declared labels keep their order and spelling."""
    inferred = getattr(adapter, "labels_inferred", False)
    mapping = label_mapping(label_groups(df["label"], () if inferred else tuple(adapter.labels)))
    if not mapping:
        return df, adapter, {}
    merged = [mapping.get(label, label) for label in adapter.labels]
    labels = tuple(sorted(set(merged))) if inferred else tuple(dict.fromkeys(merged))
    return df.with_columns(pl.col("label").replace(mapping)), Relabelled(adapter, labels), mapping


class Relabelled:
    """An adapter seen with other labels (merged spellings); every other attribute is the adapter's own."""

    def __init__(self, adapter: Any, labels: tuple[str, ...]) -> None:
        self._adapter = adapter
        self.labels = labels

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


# ---- texts shared between splits -----------------------------------------------------------------

def with_text_keys(df: pl.DataFrame, steps: tuple[str, ...] | None) -> pl.DataFrame:
    """`df` with KEY: the hash of each labelled row's text after `steps` (null in unsup)."""
    from flows.clean import clean_frame  # the stage's own functions; imported late (the module loads prefect)
    from reweigh.params import CLEAN_STEPS

    labelled = df.with_row_index("_at").filter(pl.col("split") != "unsup").select("_at", "text")
    keys = clean_frame(labelled, list(CLEAN_STEPS if steps is None else steps))
    keys = keys.select("_at", pl.when(pl.col("text").is_not_null()).then(pl.col("text").hash(seed=0)).alias(KEY))
    return df.drop(KEY, strict=False).with_row_index("_at").join(keys, on="_at", how="left", maintain_order="left").drop("_at")


def _twin(split: str) -> pl.Expr:
    """The id of the first row of `split` with the same cleaned text (null when none)."""
    return pl.when(pl.col(KEY).is_not_null()).then(pl.col("id").filter(pl.col("split") == split).first().over(KEY))


def dedupe(df: pl.DataFrame, mode: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """`df` (with KEY) without the copies `mode` drops, and how many rows were dropped, per reason."""
    if mode == "none":
        return df, {}
    reasons = [(f"{dropped} rows whose text is in {kept}", (pl.col("split") == dropped) & _twin(kept).is_not_null())
               for kept, dropped in PAIRS]
    if mode == "drop_all":
        later = pl.col(KEY).is_not_null() & ~pl.struct("split", KEY).is_first_distinct()
        reasons.append(("later copies within a split", later))
    reason = pl.when(reasons[0][1]).then(pl.lit(reasons[0][0]))
    for name, condition in reasons[1:]:
        reason = reason.when(condition).then(pl.lit(name))
    marked = df.with_columns(reason.alias("_drop"))
    counts = {name: n for name, n in marked.group_by("_drop").len().drop_nulls().sort("_drop").iter_rows()}
    return marked.filter(pl.col("_drop").is_null()).drop("_drop"), counts


# ---- the checks ----------------------------------------------------------------------------------

_FIX_LABELS = ("set dataset.normalize_labels: true to merge each group (into the declared label, else the most "
               "frequent spelling, stripped), or correct the labels in the data")
_FIX_SHARED = ("set dataset.dedupe: drop_overlap (drops the {b} copies) or drop_all (also repeats within a split), "
               "or remove them from the data")
_FIX_SMALL = ("add rows for these classes, or merge or drop them (a metric on a few rows is noise); "
              "dataset.min_class_rows sets the threshold (0 turns the check off)")


def check(df: pl.DataFrame, adapter: Any, hygiene: Hygiene, texts: Callable[[list[int]], pl.DataFrame] | None = None,
          validate_rows: int = 0, seed: int = 0) -> list[ExpectationResult]:
    """Label spellings, texts shared between each pair of the splits present, classes under min_class_rows.

    `df` has columns id, label, split, and KEY or text (KEY is then computed from hygiene.clean_steps). Without
    text it has `_row` and `texts` reads back the sample rows' texts (`_row`, text) from those positions. Over
    `validate_rows` rows (0: never) GX sees a seeded sample and the flagged rows, counts exact (adapters/sampled.py)."""
    if KEY not in df.columns:
        df = with_text_keys(df, hygiene.clean_steps)
    present = set(df["split"].unique().to_list())
    pairs = [(a, b) for a, b in PAIRS if {a, b} <= present]
    groups = label_groups(df["label"], () if getattr(adapter, "labels_inferred", False) else tuple(adapter.labels))
    helper = df.select(
        "split", "label",
        pl.col("label").replace_strict(label_mapping(groups), default=None, return_dtype=pl.String).alias("label_variant_of"),
        pl.len().over("split", "label").alias("class_rows"),
        *[_twin(a).alias(f"same_text_in_{a}") for a in dict.fromkeys(a for a, _ in pairs)],
    )
    expectations = _expectations(pairs, [s for s in ("val", "test") if s in present], adapter.labels, hygiene.min_class_rows)
    shown = df.with_columns(helper.drop("split", "label").get_columns())
    samples: Any = shown
    if texts is not None:
        def samples(at: list[int]) -> pl.DataFrame:  # the rows at these positions, their texts read back
            rows = shown[at]
            return rows.join(texts(sorted(rows["_row"].to_list())), on="_row", how="left", maintain_order="left")
    name = f"{adapter.name}_hygiene"
    if validate_rows and df.height > validate_rows:
        positioned = helper.with_row_index("_pos")
        results, _ = run_suite_sampled(helper, expectations, name, lambda at: positioned[at], validate_rows, seed,
                                       samples=samples if callable(samples) else lambda at: samples[at])
    else:
        results = run_suite(helper, expectations, name, samples=samples)
    details = _details(df, adapter, pairs, groups, hygiene.min_class_rows)
    for result in results:
        result.details = details.get(result.column, {}).get(result.condition) if not result.success else None
    return results


def _expectations(pairs: list[tuple[str, str]], held_out: list[str], labels: tuple[str, ...], min_rows: int) -> list:
    """The GX expectations on the helper columns, all warnings; `meta` says what each checks and what to change."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E, split = gx.expectations, Column("split")
    out = [E.ExpectColumnValuesToBeNull(column="label_variant_of", severity="warning", meta={
        "check": "labels that differ only by case or surrounding whitespace", "fix": _FIX_LABELS, "show": ["label_variant_of"]})]
    for a, b in pairs:
        out.append(E.ExpectColumnValuesToBeNull(column=f"same_text_in_{a}", row_condition=split == b, severity="warning", meta={
            "check": f"texts in both {a} and {b} (after clean.steps)", "fix": _FIX_SHARED.format(b=b), "show": [f"same_text_in_{a}"]}))
    small = {"check": f"classes with fewer than {min_rows} rows in a split", "fix": _FIX_SMALL}
    out.append(E.ExpectColumnValuesToBeBetween(column="class_rows", min_value=min_rows, row_condition=split != "unsup",
                                               severity="warning", meta=small))
    if min_rows > 0:  # a class with no rows at all in val or test has no row to fail the check above
        out += [E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=list(labels), row_condition=split == s,
                                                         severity="warning", meta=small) for s in held_out]
    return out


def _details(df: pl.DataFrame, adapter: Any, pairs: list, groups: dict, min_rows: int) -> dict[str | None, dict[str | None, Any]]:
    """What each check found, by (column, condition) as the results name them."""
    details: dict[str | None, dict[str | None, Any]] = {
        "label_variant_of": {None: {m: s for m, s in groups.items() if len(s) > 1 or m not in s}},
        "class_rows": {'split != "unsup"': small_classes(df, adapter.labels, min_rows)},
        "label": {f'split == "{s}"': [c for c in small_classes(df, adapter.labels, 1) if c["split"] == s] for s in ("val", "test")},
    }
    for a, b in pairs:
        details.setdefault(f"same_text_in_{a}", {})[f'split == "{b}"'] = shared_texts(df, a, b)
    return details


def shared_texts(df: pl.DataFrame, a: str, b: str) -> dict[str, int]:
    """How many distinct cleaned texts splits `a` and `b` share, and the rows holding them in each."""
    def keys(split: str) -> pl.DataFrame:
        return df.filter(pl.col("split") == split).select(KEY).drop_nulls()

    shared = keys(a).unique().join(keys(b).unique(), on=KEY)
    return {"texts": shared.height, f"{a}_rows": keys(a).join(shared, on=KEY, how="semi").height,
            f"{b}_rows": keys(b).join(shared, on=KEY, how="semi").height}


def small_classes(df: pl.DataFrame, labels: tuple[str, ...], min_rows: int) -> list[dict[str, Any]]:
    """Each (split, declared label) with fewer than `min_rows` rows, absent ones (0 rows) included."""
    present = set(df["split"].unique().to_list())
    splits = [s for s in ("train", "val", "test") if s in present]
    counts = dict(((s, label), n) for s, label, n in df.group_by("split", "label").len().iter_rows())
    return [{"split": s, "label": label, "rows": counts.get((s, label), 0)}
            for s in splits for label in labels if counts.get((s, label), 0) < min_rows]
