#!/bin/bash
# The GPU run of 2026-11-26 (docs/benchmarks.md: "Ablations on full IMDB" and "The default models on a GPU"):
# every ablation and the two default models on CUDA, the embedding computed there, then the encoder's
# language model (2 epochs) before both GRUs. Needs only torch + numpy on that machine. First, here:
#     python -m bench.ablations export PROJECT .devdata --corpus     # PROJECT: a workspace after `dvc repro pretrain`
# then run this script there with .devdata carried along (results land in $OUT, or ./device-out).
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
DATA=${DATA:-.devdata}; OUT=${OUT:-device-out}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
t0=$(date +%s)
timeout 390 python3 -m bench.ablations run "$DATA" --out "$OUT/device.json" --device cuda --pretrain ppmi \
  --only gru_attention,gru,transformer,transformer_no_positions,transformer_shuffled,transformer_unmasked,transformer_unscaled,transformer_learned,gru_attention_positions \
  2>&1 | grep -v "batches, loss" | tee "$OUT/device.log"
left=$(( 520 - ($(date +%s) - t0) ))
echo "seconds left for the language-model probe: $left"
if [ $left -gt 90 ]; then
  timeout $left python3 -m bench.ablations run "$DATA" --out "$OUT/device_lm2.json" --device cuda --pretrain ppmi --lm-epochs 2 \
    --only gru_attention,gru 2>&1 | grep -v "batches, loss" | tee "$OUT/device_lm.log"
fi
echo "total $(( $(date +%s) - t0 )) s"
