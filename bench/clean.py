"""clean: the polars pipeline (flows/clean.py) against the per-document Python `re` recipe, same reviews."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.common import in_child, rate, ratio, rss_mb, timer


def course_recipe(text: str) -> str:
    """The per-document recipe taught in the course (lowercase, drop apostrophes, <br /> to space,
    punctuation to space, collapse spaces): the named baseline."""
    text = text.lower()
    text = text.replace("'", "")
    text = re.sub(r"<br\s*/?>", " ", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# What the recipe leaves in that the pipeline removes: tags other than <br />, and HTML entities.
_OTHER_MARKUP = re.compile(r"<(?!br\s*/?>)[^<>]*>", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]*);")


def _polars(raw: str, out: str, steps: list[str], per_step: bool) -> dict[str, Any]:
    import polars as pl

    from flows.clean import STEPS, clean_frame

    df = pl.read_parquet(raw)
    base = rss_mb()
    with timer() as t:
        cleaned = clean_frame(df, steps)
    result: dict[str, Any] = {"seconds": round(t["s"], 3), "docs": df.height, "rss_before_mb": base,
                              "threads": pl.thread_pool_size()}
    if per_step:  # each step alone on the raw text: where the time goes
        result["step_seconds"] = {}
        for name in steps:
            with timer() as ts:
                df.select(STEPS[name](pl.col("text")))
            result["step_seconds"][name] = round(ts["s"], 3)
    if out:  # the tokenize section's input, with id, label and split
        df.with_columns(cleaned["text"]).write_parquet(out)
    return result


def _recipe(raw: str, out: str) -> dict[str, Any]:
    import polars as pl

    texts = pl.read_parquet(raw, columns=["text"])["text"].to_list()
    base = rss_mb()
    with timer() as t:
        cleaned = [course_recipe(x) for x in texts]
    pl.DataFrame({"text": cleaned}).write_parquet(out)
    return {"seconds": round(t["s"], 3), "docs": len(texts), "rss_before_mb": base, "threads": 1}


def _compare(raw: str, ours: str, ref: str) -> dict[str, Any]:
    import polars as pl

    texts = pl.read_parquet(raw, columns=["text"])["text"].to_list()
    a = pl.read_parquet(ours)["text"].to_list()
    b = pl.read_parquet(ref)["text"].to_list()
    differing = [i for i in range(len(texts)) if a[i] != b[i]]
    markup = [i for i in differing if _OTHER_MARKUP.search(texts[i])]
    marked = set(markup)
    entity = [i for i in differing if i not in marked and _ENTITY.search(texts[i])]
    explained = set(markup) | set(entity)
    other = [i for i in differing if i not in explained]
    examples = []
    for i in other[:3]:
        k = next((j for j in range(min(len(a[i]), len(b[i]))) if a[i][j] != b[i][j]), min(len(a[i]), len(b[i])))
        examples.append({"pipeline": a[i][max(0, k - 40):k + 40], "recipe": b[i][max(0, k - 40):k + 40]})
    sample = []
    for i in (markup[:1] + entity[:1]):
        m = _OTHER_MARKUP.search(texts[i]) or _ENTITY.search(texts[i])
        sample.append({"raw": texts[i][max(0, m.start() - 30):m.end() + 30], "found": m.group(0)})
    return {
        "documents": len(texts),
        "differing_documents": len(differing),
        "differing_with_other_markup": len(markup),
        "differing_with_html_entities": len(entity),
        "differing_unexplained": len(other),
        "unexplained_examples": examples,
        "explained_examples": sample,
        "explanation": ("The recipe only turns <br /> into a space: other tags (<i>, <hr>, <a href=...>) leave their "
                        "words behind (e.g. 'i', 'hr', 'a href'), and HTML entities leave their names (e.g. "
                        "'&amp;' becomes 'amp'). The pipeline strips every tag and decodes entities first."),
    }


def run(work: Path, steps: list[str], quick: bool) -> dict[str, Any]:
    raw = str(work / "raw.parquet")
    ours, ref = str(work / "clean.parquet"), str(work / "clean_recipe.parquet")
    polars_all = in_child(_polars, raw, ours, steps, True)
    polars_one = in_child(_polars, raw, "", steps, False, env={"POLARS_MAX_THREADS": "1"})
    recipe = in_child(_recipe, raw, ref)
    for r in (polars_all, polars_one, recipe):
        r["docs_per_s"] = rate(r["docs"], r["seconds"])
    agreement = in_child(_compare, raw, ours, ref)
    agreement.pop("peak_rss_mb", None)
    return {
        "documents": recipe["docs"],
        "steps": steps,
        "polars": polars_all,
        "polars_1_thread": polars_one,
        "baseline_re_recipe": recipe,
        "speedup": ratio(polars_all["docs_per_s"], recipe["docs_per_s"]),
        "speedup_1_thread": ratio(polars_one["docs_per_s"], recipe["docs_per_s"]),
        "target_speedup": 10.0,
        "agreement": agreement,
    }
