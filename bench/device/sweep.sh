#!/bin/bash
# The knob sweep of 2026-11-26 on the GPU (docs/benchmarks.md, "The default models on a GPU"): both GRUs per
# setting, on the arrays of `python -m bench.ablations export` (see ablations.sh beside this file).
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
DATA=${DATA:-.devdata}; OUT=${OUT:-device-out}; mkdir -p "$OUT"
t0=$(date +%s); i=0
run() { i=$((i+1)); left=$(( 330 - ($(date +%s) - t0) )); [ $left -gt 20 ] || return
  echo "== $i: $*"; timeout $left python3 -m bench.ablations run "$DATA" --out "$OUT/sweep_$i.json" --device cuda --only gru_attention,gru "$@" 2>&1 | grep "test accuracy"; }
run --set model.gru.dropout=0.5 --set model.gru_attention.dropout=0.5
run --set model.gru.embedding_dropout=0.1 --set model.gru_attention.embedding_dropout=0.1
run --set train.lr=0.001
run --set model.gru.hidden_size=128 --set model.gru_attention.hidden_size=128
run --set train.weight_decay=0.1
run --set model.gru.embedding_lr_scale=0.3 --set model.gru_attention.embedding_lr_scale=0.3
run --set train.batch_size=32
echo "total $(( $(date +%s) - t0 )) s"
