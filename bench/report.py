"""bench.json → bench.md: one Markdown table per section, every figure in it."""
from __future__ import annotations

from typing import Any


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:  # nan
            return "–"
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _error(section: dict) -> list[str]:
    if not section:
        section["error"] = "section not run (--sections)"
    return [f"**not measured**: {section['error']}", ""] if "error" in section else []


def render(b: dict[str, Any]) -> str:
    m = b["meta"]
    mc = m["machine"]
    L = [f"# reweigh benchmarks ({m['mode']} mode)", "",
         f"- date: {m['date']} · took {_f(m.get('bench_seconds'), 0)} s",
         f"- machine: {mc['cores']} cores ({mc['cpu'] or 'cpu ?'}), {_f(mc['memory_gb'])} GB, torch threads {mc['torch_threads']}, "
         f"torch {mc['torch']}, polars {mc['polars']}, Python {mc['python']}",
         f"- load average at start / end: {mc['load_average_start']} / {m.get('load_average_end')} "
         "(other work on the machine slows every figure alike)",
         f"- code: {m.get('git')}; data: {m['archive'] or 'cached official download'}, "
         f"{_f(m['documents'])} reviews ({', '.join(f'{k} {v:,}' for k, v in m['splits'].items())})"]
    for name, r in (m.get("sections_rerun") or {}).items():
        L.append(f"- section {name} re-run on {r['date']}"
                 + (f" (load average {r['load_average_start']} → {r['load_average_end']})" if r.get("load_average_start") else "")
                 + f": {r['why']}")
    L.append("")

    c = dict(b.get("clean", {}))
    L += ["## clean: polars pipeline vs per-document `re` recipe", ""] + _error(c)
    if "error" not in c:
        L += ["| implementation | docs | s | docs/s | × recipe | peak RSS MB |", "|---|--:|--:|--:|--:|--:|"]
        rows = [(f"polars, {c['polars']['threads']} threads (clean stage)", c["polars"], c["speedup"]),
                ("polars, 1 thread", c["polars_1_thread"], c["speedup_1_thread"]),
                ("Python `re` recipe, 1 thread (baseline)", c["baseline_re_recipe"], 1.0)]
        for name, r, x in rows:
            L.append(f"| {name} | {_f(r['docs'])} | {_f(r['seconds'], 2)} | {_f(r['docs_per_s'], 0)} | {_f(x, 2)} | {_f(r['peak_rss_mb'], 0)} |")
        a = c["agreement"]
        L += ["", f"Target ≥ {c['target_speedup']:.0f}×: {'met' if c['speedup'] >= c['target_speedup'] else 'not met'} ({_f(c['speedup'], 2)}×).",
              f"Outputs: {a['differing_documents']:,} of {a['documents']:,} documents differ "
              f"({a['differing_with_other_markup']:,} hold tags other than `<br />`, {a['differing_with_html_entities']:,} hold HTML entities, "
              f"{a['differing_unexplained']:,} unexplained). {a['explanation']}",
              "", "Each step alone on the raw text (s): " + ", ".join(f"{k} {v:.2f}" for k, v in c["polars"].get("step_seconds", {}).items()), ""]

    t = dict(b.get("tokenize", {}))
    L += ["## tokenize: train and encode, each kind", ""] + _error(t)
    if "error" not in t:
        cfg = t["config"]
        L += [f"vocab_size {cfg['vocab_size']:,}, min_frequency {cfg['min_frequency']}, max_length {cfg['max_length']}, "
              f"encode chunks of {cfg['chunk_size']:,} docs; trained on train + unsup, encoded train + test. "
              f"The project uses `{t['project_kind']}`.", "",
              "| kind | vocab | fit docs | train s | train docs/s | encode docs | encode s | encode docs/s | encode tokens/s | tokens/doc | peak RSS MB |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for kind, r in t["kinds"].items():
            L.append(f"| {kind} | {_f(r['vocab_size'])} | {_f(r['fit_docs'])} | {_f(r['train_s'], 2)} | {_f(r['train_docs_per_s'], 0)} | "
                     f"{_f(r['encode_docs'])} | {_f(r['encode_s'], 2)} | {_f(r['encode_docs_per_s'], 0)} | {_f(r['encode_tokens_per_s'], 0)} | "
                     f"{_f(r['mean_tokens_per_doc'])} | {_f(r['peak_rss_mb'], 0)} |")
        cp = t["char_fast_path"]
        L += ["", f"char encoding, {cp['docs']:,} docs (peak RSS of the encoding process):", "",
              "| path | s | docs/s | tokens/s | peak RSS MB |", "|---|--:|--:|--:|--:|"]
        for name, r in (("code-point lookup (numpy, the stage)", cp["fast_lookup"]),
                        ("`tok.encode_batch_fast`, per-character pre-tokenizer (baseline)", cp["baseline_encode_batch"])):
            L.append(f"| {name} | {_f(r['seconds'], 2)} | {_f(r['docs_per_s'], 0)} | {_f(r['tokens_per_s'], 0)} | {_f(r['peak_rss_mb'], 0)} |")
        L += ["", f"Lookup is {_f(cp['speedup'], 1)}× faster; same ids: {'yes' if cp['same_ids'] else 'NO'}.", ""]

    tr = dict(b.get("train", {}))
    L += ["## train: length bucketing vs padding to the fixed maximum", ""] + _error(tr)
    if "error" not in tr:
        any_model = next(iter(tr["models"].values()))
        L += [f"batch {tr['batch_size']}, max_length {tr['max_length']}, {any_model['bucketed']['torch_threads']} torch threads, "
              f"flush denormals on; {any_model['bucketed']['batches_timed']} batches timed after {any_model['bucketed']['warmup_batches']} warm-up, "
              f"s/epoch extrapolated to the epoch's {any_model['bucketed']['epoch_batches']:,} batches ({any_model['bucketed']['epoch_docs']:,} reviews) by padded positions.", "",
              "| model | batching | s/batch | real tokens/s | s/epoch | padding share | × fixed_max | peak RSS MB |",
              "|---|---|--:|--:|--:|--:|--:|--:|"]
        for name, r in tr["models"].items():
            for mode, label in (("bucketed", "bucketed, pad to batch max (training)"), ("random", "random, pad to batch max"),
                                ("fixed_max", f"random, pad to {tr['max_length']} (baseline)")):
                x = r[mode]
                L.append(f"| {name} | {label} | {_f(x['s_per_batch'], 3)} | {_f(x['tokens_per_s'], 0)} | {_f(x['s_per_epoch'], 1)} | "
                         f"{x['padding_share']:.1%} | {_f(r['fixed_max']['s_per_epoch'] / x['s_per_epoch'] if x['s_per_epoch'] else None, 2)} | {_f(x['peak_rss_mb'], 0)} |")
        L.append("")

    p = dict(b.get("pipeline", {}))
    L += ["## whole pipeline: cold `dvc repro` in a fresh copy", ""] + _error(p)
    if "error" not in p:
        L += [f"params override: `{p['params_override']}`", "",
              "| stage | `dvc repro --single-item` s | stage command's own s | peak RSS MB |", "|---|--:|--:|--:|"]
        for name, s in p["stages"].items():
            L.append(f"| {name} | {_f(s['wall_s'], 1)} | {_f(s['stage_s'], 1)} | {_f(s['stage_peak_rss_mb'], 0)} |")
        L.append(f"| **cold repro, all stages** | **{_f(p['cold_repro_s'], 1)}** | | |")
        po = p["prefect_overhead"]
        L += ["", f"- slowest stage: **{p['slowest_stage']}**: {p.get('slowest_stage_why') or ''}",
              f"- no-op `dvc repro`: {_f(p['noop_repro_s'], 2)} s (stages rerun: {len(p['noop_stages_run'])})",
              f"- Prefect overhead, stage `{po['stage']}` as a flow vs `.fn()` bare: first call in a process "
              f"{_f(po['first_call_overhead_s'], 2)} s (flow {po['as_flow_s'][0]:.2f} s vs bare {po['bare_s'][0]:.2f} s, starts the temporary server), "
              f"a later call {_f(po['later_call_overhead_s'], 2)} s (flow {po['as_flow_s'][-1]:.2f} s vs bare {po['bare_s'][-1]:.2f} s); "
              f"peak RSS {_f(po['as_flow_peak_rss_mb'], 0)} vs {_f(po['bare_peak_rss_mb'], 0)} MB", ""]

    a = dict(b.get("accuracy", {}))
    L += ["## accuracy on the IMDB test set", ""] + _error(a)
    if "error" not in a:
        L += [f"Source: {a.get('source')}" + (f" (workspace: {a['workspace_check']})" if a.get("workspace_check") else ""), "",
              "| model | accuracy | macro F1 | PR-AUC |", "|---|--:|--:|--:|"]
        for name, r in a.get("models", {}).items():
            pct = lambda v: _f(v * 100 if v is not None and v <= 1 else v, 2)  # noqa: E731
            L.append(f"| {name} | {pct(r['accuracy'])}% | {pct(r['macro_f1'])}% | {pct(r['pr_auc'])}% |")
        for ref, acc in a["references_accuracy_pct"].items():
            L.append(f"| {ref} (published) | {acc:.2f}% | – | – |")
        L.append("")
    L += _pretrain(dict(b.get("pretrain", {})))
    if "ablations" in b:
        from bench.ablations import render as ablations

        abl = dict(b["ablations"])
        L += ["## ablations: positions, shuffled order, the 1/sqrt(d) scale, the padding mask", ""] + _error(abl)
        L += ablations(abl) + [""] if "error" not in abl else []
    if "datasets" in b:
        L += _datasets(dict(b["datasets"]))
    if "serving" in b:
        L += _serving(dict(b["serving"]))
    if "scale" in b:
        L += _scale(dict(b["scale"]))
    return "\n".join(L)


def _datasets(d: dict[str, Any]) -> list[str]:
    L = ["## datasets: the default pipeline on a multi-class table and on few labels", ""] + _error(d)
    if "error" in d:
        return L
    pct = lambda v: _f(100 * v, 2)  # noqa: E731
    for name, r in d["datasets"].items():
        rows = ", ".join(f"{k} {v:,}" for k, v in r["rows"].items())
        L += [f"**{name}**: classes {', '.join(r['labels'])}; rows {rows}; `dvc repro` {_f(r['repro_s'], 0)} s.", "",
              "| model | test accuracy % [95% CI] | macro F1 % [95% CI] |", "|---|--:|--:|"]
        for model, m in r["models"].items():
            L.append(f"| {model} | {pct(m['accuracy'])} [{pct(m['accuracy_ci_low'])}, {pct(m['accuracy_ci_high'])}] | "
                     f"{pct(m['f1_macro'])} [{pct(m['f1_macro_ci_low'])}, {pct(m['f1_macro_ci_high'])}] |")
        e = r.get("ensemble_vs_best_member")
        if e:
            lo, hi = e["diff_ci"]
            L += ["", f"Ensemble − best member ({e['best_member']}): {_f(100 * e['accuracy_diff'], 2)} pts "
                      f"(CI [{pct(lo) if lo is not None else '?'}, {pct(hi) if hi is not None else '?'}], McNemar p "
                      f"{'< 0.001' if (e['mcnemar_p'] or 1) < 0.001 else _f(e['mcnemar_p'], 3)}): {'not ' if e['within_member_ci'] else ''}below that member by more than "
                      f"the half-width of its CI ({_f(100 * e['member_ci_half_width'], 2)} pts)."]
        L.append("")
    return L


def _stopped(reason: str | None) -> str:
    """The train stage's stop reason, its first clause: "early stopping", "hit the cap of train.epochs=40 ..."."""
    return reason.split(":")[0].split(" (")[0] if reason else "–"


def _pretrain(p: dict[str, Any]) -> list[str]:
    L = ["## pretrain: random vs pretrained embeddings, with all and with few labelled reviews", ""] + _error(p)
    if "error" in p:
        return L
    pct = lambda v: _f(100 * v, 2)  # noqa: E731
    counts = {d: f"{rows['train'] + rows['val']:,} labelled" for d, rows in p["datasets"].items()}
    sets = {d: f"{counts[d]} ({rows['train']:,} train + {rows['val']:,} val)" for d, rows in p["datasets"].items()}
    some = next(iter(p["datasets"].values()))
    L += [f"dataset.train_limit {p['train_limit']:,} for the few-labels runs; every run: the whole test split "
          f"({some['test']:,}), all unlabelled text ({some.get('unsup', 0):,}). Params override: `{p['params_override']}`.", "",
          "| labelled training reviews | model | init | test accuracy % | macro F1 % | pretrained − random, pts | best epoch / epochs | stopped | train s |",
          "|---|---|---|--:|--:|--:|--:|---|--:|"]
    for d, label in sets.items():
        for r in [r for r in p["models"] if r["dataset"] == d] + [p["baseline"][d]]:
            gain = p["gain_pts"][d].get(r["model"]) if r["init"] == "pretrained" else None
            epochs = f"{r['best_epoch']} / {r['epochs']}" if r["init"] else "–"  # the baseline has none
            L.append(f"| {label} | {r['model'] if r['init'] else 'baseline (TF-IDF)'} | {r['init'] or '–'} | {pct(r['accuracy'])} | "
                     f"{pct(r['macro_f1'])} | {_f(gain, 2)} | {epochs} | {_stopped(r['stop_reason'])} | "
                     f"{_f(r['train_seconds'], 1)} |")
    L += ["", "The pretrain stage (its own figures, from its \"done in\" line):", "",
          "| labelled training reviews | s | peak RSS MiB | tokens | documents | dim |", "|---|--:|--:|--:|--:|--:|"]
    for d, s in p["pretrain"].items():
        docs = ", ".join(f"{k} {v:,}" for k, v in s["documents"].items())
        L.append(f"| {sets[d]} | {_f(s['seconds'], 1)} | {_f(s['peak_rss_mib'], 0)} | {_f(s['tokens'])} | {docs} | {s['dim']} |")
    L += ["", "`dvc repro` runs, in order: " + "; ".join(
        f"{counts[r['dataset']]}, init {r['init']}: {_f(r['repro_s'], 0)} s, ran {', '.join(r['stages_run']) or 'nothing'}"
        for r in p["runs"]) + ".", ""]
    return L


def _serving(s: dict[str, Any]) -> list[str]:
    L = ["## serving: the HTTP service, bulk scoring and the bare forward (`--sections serving`)", ""] + _error(s)
    if "error" in s:
        return L
    L += [f"One raw test review per request; clients on the same machine; bulk and bare over {s['bulk_docs']:,} raw test reviews.", "",
          "| model | clients | requests | req/s | p50 ms | p95 ms | p99 ms | failed | server RSS MB |",
          "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for model, r in s["models"].items():
        if "error" in r:
            L.append(f"| {model} | **not measured**: {r['error'][:200]} |||||||| ")
            continue
        for lv in r["service"]["levels"]:
            L.append(f"| {model} | {lv['clients']} | {_f(lv['requests'])} | {_f(lv['requests_per_s'])} | {_f(lv['p50_ms'])} | "
                     f"{_f(lv['p95_ms'])} | {_f(lv['p99_ms'])} | {lv['failures']} | {_f(r['service']['server_peak_rss_mb'], 0)} |")
    L += ["", "| model | bulk docs/s (raw text → file) | bulk peak RSS MB | bare docs/s (encoded ids → probabilities) | bulk / bare | runs: bulk; bare |",
          "|---|--:|--:|--:|--:|---|"]
    runs = lambda x: ", ".join(_f(v, 0) for v in x.get("runs_docs_per_s", []))  # noqa: E731
    for model, r in s["models"].items():
        if "error" not in r:
            L.append(f"| {model} | {_f(r['bulk']['docs_per_s'], 0)} | {_f(r['bulk']['peak_rss_mb'], 0)} | "
                     f"{_f(r['bare'].get('docs_per_s'), 0)} | {_f(r.get('bulk_vs_bare'), 2)} | {runs(r['bulk'])}; {runs(r['bare'])} |")
    L += ["", "Bulk and bare: the median of the runs, taken in turn (bulk, bare, bulk, ...)."]
    return L + [""]


def _scale(s: dict[str, Any]) -> list[str]:
    L = ["## scale: the data stages as the corpus grows (`--sections scale`)", ""] + _error(s)
    if "error" in s:
        return L
    L += ["Streaming: the stage as `dvc repro` runs it; in memory: the same work on the whole table at once (the "
          "baseline). Each in a fresh process; peak RSS is that process's.", "",
          "| documents | stage | streaming docs/s | streaming peak RSS MB | in-memory docs/s | in-memory peak RSS MB | "
          "speed (stream / in-memory) | RSS (stream / in-memory) |",
          "|--:|---|--:|--:|--:|--:|--:|--:|"]
    for n, row in s["sizes"].items():
        for stage in s["stages"]:
            r, m = row[stage], row[stage].get("in_memory", {})
            L.append(f"| {int(n):,} | {stage} | {_f(r['docs_per_s'], 0)} | {_f(r['peak_rss_mb'], 0)} | {_f(m.get('docs_per_s'), 0)} | "
                     f"{_f(m.get('peak_rss_mb'), 0)} | {_f(r.get('stream_vs_in_memory_speed'), 2)} | {_f(r.get('stream_vs_in_memory_rss'), 2)} |")
    dask = [(n, stage, row[stage]["dask"]) for n, row in s["sizes"].items() for stage in s["stages"] if "dask" in row[stage]]
    if dask:
        L += ["", "The same stages with `engine.kind: dask` (their batches as Prefect tasks on a 2-worker Dask LocalCluster):", "",
              "| documents | stage | docs/s | stage process peak RSS MB | workers' peak RSS MB | dask / local docs/s |", "|--:|---|--:|--:|--:|--:|"]
        for n, stage, d in dask:
            L.append(f"| {int(n):,} | {stage} | {_f(d['docs_per_s'], 0)} | {_f(d['peak_rss_mb'], 0)} | {_f(d.get('workers_peak_rss_mb'), 0)} | "
                     f"{_f(d.get('vs_local_docs_per_s'), 2)} |")
    same = next((row["same_outputs"] for row in s["sizes"].values() if "same_outputs" in row), None)
    if same:
        L += ["", "Same outputs at the smallest size (streaming vs in memory): " + ", ".join(f"{k} {'yes' if v else '**NO**'}" for k, v in same.items()) + "."]
    if t := s.get("train"):
        rows, g = t["rows"], t["train_gru"]
        L += ["", f"One GRU training epoch (`--scale-train`; random initial vectors, no pretrain): {rows.get('train', 0):,} training, "
              f"{rows.get('val', 0):,} validation and {rows.get('test', 0):,} test documents.", "",
              "| step | seconds | peak RSS MB |", "|---|--:|--:|"]
        L += [f"| {stage} | {_f(t[stage]['seconds'], 0)} | {_f(t[stage]['peak_rss_mb'], 0)} |" for stage in s["stages"]]
        L.append(f"| train@gru, one epoch (training {_f(g['train_seconds'], 0)} s, test predictions {_f(g['test_predict_seconds'], 0)} s) "
                 f"| {_f(g['seconds'], 0)} | {_f(g['peak_rss_mb'], 0)} |")
    return L + [""]
