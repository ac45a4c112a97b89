"""reports/scaling.md, reports/scaling.json and reports/scaling/*.png: what the grid's points say.

Per model: test error against labelled examples on log-log axes with each point's CI, a fitted power law
(flows/scaling/fit.py) with b, c and their uncertainty, the size from which the best neural model stays below
the best linear one, the labels a target error needs (flagged beyond twice the largest size measured),
error against parameters at full size (width points), and training seconds against labelled examples.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flows.scaling.fit import crossover, fit_power_law, measured_crossover  # noqa: E402
from reweigh.io import atomic_path, write_json, write_text  # noqa: E402

EXTRAPOLATION = 2.0  # a size beyond this many times the largest measured is flagged as a long extrapolation


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def analyse(rows: list[dict[str, Any]], neural: list[str], linear: list[str], targets: list[float],
            boot: int = 300, seed: int = 0) -> dict[str, Any]:
    """rows: one per (point, model): kind, value, labels, model, error, error_low, error_high, parameters,
    train_seconds. Returns the fits, crossover and label estimates (JSON-ready)."""
    curves: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "labels":
            curves.setdefault(r["model"], []).append(r)
    fits: dict[str, Any] = {}
    for model, pts in curves.items():
        pts.sort(key=lambda r: r["labels"])
        law = fit_power_law([r["labels"] for r in pts], [r["error"] for r in pts],
                            [r["error_low"] for r in pts], [r["error_high"] for r in pts], boot=boot, seed=seed)
        fits[model] = law
    largest = max((r["labels"] for r in rows), default=0)
    smallest = min((r["labels"] for r in rows if r["kind"] == "labels"), default=0)
    full = {r["model"]: r for r in rows if r["kind"] == "labels" and r["labels"] == largest}

    def best(names: list[str]) -> str | None:
        there = [n for n in names if n in full]
        return min(there, key=lambda n: full[n]["error"]) if there else None

    best_neural, best_linear = best(neural), best(linear)
    cross: dict[str, Any] = {"neural": best_neural, "linear": best_linear, "measured": None, "fitted": None}
    if best_neural and best_linear:
        a, b = curves[best_neural], curves[best_linear]
        shared = sorted({r["labels"] for r in a} & {r["labels"] for r in b})
        err = lambda pts, n: next(r["error"] for r in pts if r["labels"] == n)  # noqa: E731
        cross["measured"] = measured_crossover(shared, [err(a, n) for n in shared], [err(b, n) for n in shared])
        if fits.get(best_neural) and fits.get(best_linear):
            cross["fitted"] = crossover(fits[best_neural], fits[best_linear], smallest, EXTRAPOLATION * largest)

    overall = best(list(full))
    needs = []
    if overall and full[overall]["error"] > 0:  # no lower error to aim for when a model makes none
        for fraction in targets:
            goal = fraction * full[overall]["error"]
            for model, law in fits.items():
                if law is None:
                    continue
                n = law.size_for(goal)
                needs.append({"target_error": round(goal, 5), "fraction": fraction, "model": model,
                              "labels": None if n is None else int(round(n)),
                              "beyond_measured": None if n is None else round(n / largest, 2),
                              "flag": ("below the fitted floor c: more labels of this kind never get there" if n is None
                                       else f"extrapolated beyond {EXTRAPOLATION:g}x the largest size measured"
                                       if n > EXTRAPOLATION * largest else "")})
    return {"largest": largest, "best_model": overall, "crossover": cross, "needs": needs,
            "fits": {m: (law.to_dict() if law else None) for m, law in fits.items()}, "_laws": fits}


def _lines(series: dict[str, list[tuple[float, float]]], colours: dict, least: int, labels: tuple[str, str, str],
           path: Path) -> None:
    """One log-log line per model with at least `least` points; labels: x, y, title."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for m, pts in series.items():
        if len(pts) >= least:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=colours[m], label=m)
    ax.set(xscale="log", yscale="log", xlabel=labels[0], ylabel=labels[1], title=labels[2])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def figures(rows: list[dict[str, Any]], analysis: dict[str, Any], out: Path) -> dict[str, str]:
    made = {}
    laws = analysis["_laws"]
    models = sorted({r["model"] for r in rows}, key=lambda m: [r["model"] for r in rows].index(m))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}

    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for m in models:
        pts = sorted((r for r in rows if r["model"] == m and r["kind"] == "labels"), key=lambda r: r["labels"])
        if not pts:
            continue
        n = np.array([r["labels"] for r in pts])
        e = np.array([r["error"] for r in pts])
        yerr = np.array([[r["error"] - r["error_low"] for r in pts], [r["error_high"] - r["error"] for r in pts]])
        ax.errorbar(n, e, yerr=np.clip(yerr, 0, None), fmt="o", ms=4, capsize=2, color=colours[m], label=m)
        if laws.get(m):
            grid = np.geomspace(n.min(), n.max() * EXTRAPOLATION, 200)
            law = laws[m]
            ax.plot(grid, law(grid), "--", lw=1, color=colours[m],
                    label=f"  {law.a:.2g}·N^-{law.b:.2f} + {law.c:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="labelled examples (train + validation)", ylabel="test error",
           title="Learning curves: test error against labelled examples")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out / "learning_curves.png")
    made["learning_curves"] = "scaling/learning_curves.png"

    width = [r for r in rows if r["kind"] == "width" or (r["kind"] == "labels" and r["labels"] == analysis["largest"])]
    if any(r["kind"] == "width" for r in rows):
        _lines({m: sorted(((r["parameters"], r["error"]) for r in width if r["model"] == m and r.get("parameters")))
                for m in models}, colours, 2, ("parameters", "test error", "Error against model size (all labels)"),
               out / "model_size.png")
        made["model_size"] = "scaling/model_size.png"
    _lines({m: sorted((r["labels"], r["train_seconds"]) for r in rows
                      if r["model"] == m and r["kind"] == "labels" and r.get("train_seconds")) for m in models},
           colours, 1, ("labelled examples", "training seconds", "Training time against labelled examples"),
           out / "training_seconds.png")
    made["training_seconds"] = "scaling/training_seconds.png"
    return made


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def markdown(rows: list[dict[str, Any]], analysis: dict[str, Any], made: dict[str, str], meta: dict[str, Any]) -> str:
    sizes = sorted({r["labels"] for r in rows if r["kind"] == "labels"})
    models = list(dict.fromkeys(r["model"] for r in rows))
    at = {(r["model"], r["labels"]): r for r in rows if r["kind"] == "labels"}
    lines = [f"# reweigh: scaling — {meta['dataset']}", "",
             "How test error falls as a model gets more labelled examples (a learning curve), and, where measured, more "
             "parameters. Each point is a DVC experiment of this commit (`dvc exp show` lists them); the largest size "
             "is the main run. Written by `reweigh scaling` from `dvc exp show --json`.", "",
             f"![learning curves]({made['learning_curves']})", "",
             "## Test error by labelled examples", "",
             "| model | " + " | ".join(f"{n:,}" for n in sizes) + " |", "|---|" + "--:|" * len(sizes)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_pct(at[(m, n)]["error"]) if (m, n) in at else "–" for n in sizes) + " |")
    lines += ["", "Each error has a 95% bootstrap CI over the test rows (reports/scaling.json); the figure draws them.", "",
              "## The fitted power law: error ≈ a·N^(-b) + c", "",
              "Hestness et al. (2017, *Deep Learning Scaling is Predictable, Empirically*) found that past a small-data "
              "region, test error falls as a power of the training-set size, a straight line on log-log axes, until it "
              "flattens towards an irreducible floor; Kaplan et al. (2020, *Scaling Laws for Neural Language Models*) "
              "found the same in data, parameters and compute for language models. Here **b** is the exponent: doubling "
              "the labels multiplies the reducible error (error − c) by 2^(-b), so b = 0.5 takes it down by 29% per "
              "doubling. **c** is the floor more labels of this kind do not remove: label noise, ambiguous texts, what "
              "the model cannot represent. With a handful of points, c and b trade off against each other: their "
              "intervals (from refitting to points redrawn within their CIs) say how far to trust them.", "",
              "| model | a | b (95% CI) | c (95% CI) | points | rmse |", "|---|--:|---|---|--:|--:|"]
    for m, fit in analysis["fits"].items():
        if fit is None:
            lines.append(f"| {m} | – | too few sizes to fit (3 needed) | | | |")
            continue
        lines.append(f"| {m} | {fit['a']:.3g} | {fit['b']:.2f} ({fit['b_ci'][0]:.2f} – {fit['b_ci'][1]:.2f}) | "
                     f"{_pct(fit['c'])} ({_pct(fit['c_ci'][0])} – {_pct(fit['c_ci'][1])}) | {fit['points']} | {_pct(fit['rmse'])} |")
    cross = analysis["crossover"]
    lines += ["", "## Where the neural model overtakes the linear one", ""]
    if cross["neural"] and cross["linear"]:
        what = (f"Measured: **{cross['neural']}** has the lower error from **{cross['measured']:,} labels** on, at every "
                f"larger size measured" if cross["measured"] else
                f"Measured: **{cross['neural']}** is not below **{cross['linear']}** at the largest size, or not from one size on")
        fitted = (f"; the fitted curves cross at about **{cross['fitted']:,.0f}** labels." if cross["fitted"] else
                  "; the fitted curves do not cross in the measured range (up to twice the largest size).")
        if cross["measured"]:
            why = (" Below that size a linear model over n-grams is the better choice: it has far fewer parameters to "
                   "fit from few examples; above it the neural model's learned representations pay.")
        elif cross["fitted"]:
            beyond = " (beyond the largest size measured)" if cross["fitted"] > analysis["largest"] else ""
            why = (f" The measured points do not show it yet: the fit only forecasts that {cross['neural']}, whose error "
                   f"falls faster, passes {cross['linear']} from there{beyond}. Label more and rerun the grid to see "
                   "whether it does; until then the linear model is at least as good at every size measured.")
        else:
            why = (" Here the linear model is at least as good at every size measured: its n-gram features need few "
                   "examples, and the neural model's representation has not yet paid for its parameters.")
        lines.append(f"The best neural model at full size is {cross['neural']}, the best linear one {cross['linear']}. "
                     + what + fitted + why)
    else:
        lines.append("Needs a neural model and a baseline in the grid.")
    lines += ["", "## Labels needed for a target error", "",
              f"From each fitted curve, the labelled examples at which it reaches a fraction of today's best error "
              f"({analysis['best_model']}, {_pct(at[(analysis['best_model'], analysis['largest'])]['error']) if analysis['best_model'] else '–'} "
              f"at {analysis['largest']:,} labels). Beyond {EXTRAPOLATION:g}x the largest size measured the estimate is an "
              "extrapolation of a fit, flagged: collect more labels in steps and rerun the grid rather than trusting it.", "",
              "| target error | model | labels needed | note |", "|--:|---|--:|---|"]
    for need in analysis["needs"]:
        n = "–" if need["labels"] is None else f"{need['labels']:,}"
        lines.append(f"| {_pct(need['target_error'])} ({need['fraction']:g} x) | {need['model']} | {n} | {need['flag']} |")
    if "model_size" in made:
        lines += ["", "## Error against parameters (all labels)", "", f"![model size]({made['model_size']})", "",
                  "| model | width | parameters | test error |", "|---|--:|--:|--:|"]
        for r in sorted((r for r in rows if r["kind"] == "width" or r["labels"] == analysis["largest"] and r["kind"] == "labels"),
                        key=lambda r: (r["model"], r.get("parameters") or 0)):
            if r.get("parameters"):
                lines.append(f"| {r['model']} | x{r['value'] if r['kind'] == 'width' else 1:g} | {r['parameters']:,} | {_pct(r['error'])} |")
    lines += ["", "## Training time", "", f"![training seconds]({made['training_seconds']})", "",
              "## How it was made", "",
              f"`reweigh scaling` on commit {meta['commit'][:12]}: `dvc exp run --queue -S train.label_limit=N` for each size "
              "(a seeded, stratified cut of train and validation alike; test, tokenizer and pretraining unchanged), "
              f"`dvc queue start --jobs {meta['jobs']}`, then `dvc exp show --json`. Experiments: "
              + ", ".join(f"`{n}`" for n in meta["experiments"]) + ". Any other sweep goes through the same queue: "
              "`dvc exp run --queue -S 'train.lr=0.0005,0.002'` then `dvc queue start`.", ""]
    return "\n".join(lines)


def write(rows: list[dict[str, Any]], analysis: dict[str, Any], meta: dict[str, Any], reports: Path) -> dict[str, Path]:
    made = figures(rows, analysis, reports / "scaling")
    md = markdown(rows, analysis, made, meta)
    public = {k: v for k, v in analysis.items() if not k.startswith("_")}
    return {"json": write_json({"meta": meta, "points": rows, **public}, reports / "scaling.json"),
            "md": write_text(md, reports / "scaling.md")}
