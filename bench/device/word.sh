#!/bin/bash
# Issue 10, third device round (2026-11-26): regularisation and schedule knobs around the word-vocabulary
# configuration (tokenize.kind=word, vocab 30000, pretrain.encoder_epochs=1, train.lr=0.001), both GRUs,
# all starting from ONE pretrained.pt computed on the 2-core CPU by the pretrain stage (so the device only
# trains). Jobs run $PAR at a time: the models are small, one job leaves the GPU mostly idle.
#   python -m bench.ablations export <project with that config> .devw1
#   DATA=.devw1 bash bench/device/word.sh
#   DATA=.devword bash bench/device/word.sh lm   # export --corpus of the same project: the LM on the device
#   DATA=.devword bash bench/device/word.sh lmcost   # cheaper language models (a bigger batch, a shorter cut)
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
DATA=${DATA:-.devw1}; OUT=${OUT:-device-out}; PAR=${PAR:-4}; BUDGET=${BUDGET:-420}; mkdir -p "$OUT"
t0=$(date +%s)
B(){ echo "--set model.gru.$1=$2 --set model.gru_attention.$1=$2"; }
if [ "$1" = lmcost ]; then  # cheaper language models: a bigger batch, a shorter cut (tokenize.max_length reaches only the LM here)
jobs_=(
  "lm1_b128_lr5|--pretrain ppmi --lm-epochs 1 --set pretrain.batch_size=128 --set pretrain.lr=0.005"
  "lm1_cut256|--pretrain ppmi --lm-epochs 1 --set tokenize.max_length=256"
  "lm1_b128|--pretrain ppmi --lm-epochs 1 --set pretrain.batch_size=128"
)
elif [ "$1" = lm ]; then  # the language model's length and width: PPMI-SVD + LM computed on the device (export --corpus)
jobs_=(
  "lm2|--pretrain ppmi --lm-epochs 2"
  "lm4|--pretrain ppmi --lm-epochs 4"
  "lm2_h128|--pretrain ppmi --lm-epochs 2 --set pretrain.hidden_size=128 $(B hidden_size 128)"
  "lm4_h128|--pretrain ppmi --lm-epochs 4 --set pretrain.hidden_size=128 $(B hidden_size 128)"
)
else
jobs_=(
  "base|"
  "seed7|--set seed=7"
  "emb_lr0.1|$(B embedding_lr_scale 0.1)"
  "emb_lr0|$(B embedding_lr_scale 0)"
  "emb_drop0.2|$(B embedding_dropout 0.2)"
  "dropout0.5|$(B dropout 0.5)"
  "wd0.1|--set train.weight_decay=0.1"
  "lr0.0005|--set train.lr=0.0005"
  "batch32|--set train.batch_size=32"
  "emb_lr0.3_drop0.1|$(B embedding_lr_scale 0.3) $(B embedding_dropout 0.1)"
  "patience3|--set train.patience=3"
  "seed11|--set seed=11"
)
fi
one() { name=${1%%|*}; args=${1#*|}; left=$(( BUDGET - ($(date +%s) - t0) )); [ $left -gt 40 ] || return
  timeout $left python3 -m bench.ablations run "$DATA" --out "$OUT/sweep-$name.json" --device cuda --threads 3 \
    --only gru,gru_attention --set train.lr=0.001 $args > "$OUT/sweep-$name.log" 2>&1
  echo "== $name ($args) at $(( $(date +%s) - t0 )) s"; grep -E "test accuracy|Error" "$OUT/sweep-$name.log"; }
for j in "${jobs_[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do sleep 1; done
  one "$j" &
done
wait
nvidia-smi --query-gpu=name,memory.used --format=csv
echo "total $(( $(date +%s) - t0 )) s"
