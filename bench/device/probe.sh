#!/bin/bash
# The issue 10 probes of 2026-11-26 (second session) on the GPU (docs/benchmarks.md, "What the language model
# needs"): both GRUs per setting, PPMI-SVD (and the language model) computed on the device.
#   DATA=.devnew  bash bench/device/probe.sh bpe    # export of a head_tail project (bpe 20k, the default)
#   DATA=.devword bash bench/device/probe.sh word   # the same with tokenize.kind=word, vocab_size=30000
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
DATA=${DATA:-.devnew}; OUT=${OUT:-device-out}; mkdir -p "$OUT"
t0=$(date +%s); i=0
D() { echo "--set pretrain.dim=$1 --set model.gru.embedding_dim=$1 --set model.gru_attention.embedding_dim=$1"; }
run() { i=$((i+1)); left=$(( 500 - ($(date +%s) - t0) )); [ $left -gt 30 ] || return
  echo "== $i: $*"; timeout $left python3 -m bench.ablations run "$DATA" --out "$OUT/probe-$1-$i.json" --device cuda \
    --pretrain ppmi --only gru,gru_attention "${@:2}" 2>&1 | grep -E "test accuracy|language model epoch [0-9]+: loss"; }
if [ "$1" = word ]; then
  run word
  run word --lm-epochs 1 --set train.lr=0.001
  run word --set train.lr=0.001
else
  run bpe
  run bpe $(D 128)
  run bpe --lm-epochs 1
  run bpe $(D 256)
  run bpe --lm-epochs 2 $(D 128)
fi
echo "total $(( $(date +%s) - t0 )) s"
