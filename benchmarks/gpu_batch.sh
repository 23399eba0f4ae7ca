#!/bin/bash
# The GPU batches of session 11 (one H100, 16 CPU cores; torch 2.11.0+cu130 there): the throughput check, then
# many small runs side by side on the one GPU (one process each, fp32, one CPU thread each). Run from the repo
# root with BEHAVIORSEQ_DATA pointing at a copy of ../shared/data; results land in benchmarks/results/ and the run
# folders in benchmarks/_work/. Batch 1 started NVIDIA MPS (nvidia-cuda-mps-control -d); batch 2 ran on the same warm
# machine with that daemon still up (nvidia-smi listed nvidia-cuda-mps-server), so both ran under MPS.
#   bash benchmarks/gpu_batch.sh 1     # gpu_check, BERT4Rec on Beauty/Toys, SASRec/GRU4Rec under the ComiRec protocol
#   bash benchmarks/gpu_batch.sh 2     # SASRec/GRU4Rec on Toys; SRA-CL and CL4SRec (time-limited, not converged)
#   bash benchmarks/gpu_batch.sh 3     # prepared in session 12 (session 14: + an NHP-under-AMP check), not yet run
# Batch 3: SRA-CL (ml-100k with MiniLM text semantics, carried as item vectors: benchmarks/item_vectors.py writes
# $VEC) and CL4SRec on ml-100k, seeds 1-3, and on Beauty, seeds 2-3 (seed 1 of both ran on CPU in session 12).
# Each is a resumable run folder (behaviorseq train --resume) stopped after the epoch that passes TL seconds;
# bring the folders back (checkpoints included) and resume them on a CPU or the next GPU with a later limit.
set -u
BATCH=${1:?batch 1 or 2}; TL=${TL:-380}; HARD=${HARD:-450}; PY=${PY:-python3}
export BEHAVIORSEQ_PROGRESS=0 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
L=${LOGS:-benchmarks/_work/gpu_logs}; mkdir -p "$L"
C="train.device=cuda train.amp=false train.threads=1 train.time_limit_s=$TL"
if [ "$BATCH" = 1 ]; then
  $PY benchmarks/gpu_check.py --dataset beauty --device cuda --epochs 4 > "$L/gpu_check.log" 2>&1
  nvidia-cuda-mps-control -d || true
  for ds in beauty toys; do for s in 1 2 3; do
    timeout "$HARD" $PY benchmarks/baselines.py --models bert4rec --datasets $ds --seeds $s --tag=-gpu \
      --out gpu_bert4rec_${ds}_s$s.json $C > "$L/bert4rec_${ds}_s$s.log" 2>&1 &
  done; done
  for m in sasrec gru4rec; do for ds in beauty toys; do for s in 1 2 3; do
    timeout "$HARD" $PY benchmarks/comirec.py table --models $m --datasets $ds --seeds $s --suffix _gpu_${m}_${ds}_s$s \
      $C > "$L/comirec_${m}_${ds}_s$s.log" 2>&1 &
  done; done; done
elif [ "$BATCH" = 3 ]; then
  VEC=${VEC:-$BEHAVIORSEQ_DATA/vectors/ml-100k_minilm.npz}; TL=${TL:-480}; HARD=${HARD:-560}
  # session 14: NHP's hand-written kernels under CUDA autocast (train.amp=true) give the fp32 loss
  $PY -c "import torch; from behaviorseq import models
m = models.build('nhp', 3, {}).cuda(); dt = torch.rand(64, 50, device='cuda'); dt[:, 0] = 0
b = {'time': dt.cumsum(1), 'dtime': dt, 'type': torch.randint(0, 3, (64, 50), device='cuda'), 'mask': torch.ones(64, 50, dtype=torch.bool, device='cuda')}
torch.manual_seed(0); plain = m.loss(b)
with torch.autocast('cuda', dtype=torch.bfloat16): torch.manual_seed(0); amp = m.loss(b)
amp.backward(); print('nhp cuda amp', plain.item(), amp.item(), amp.dtype)" > "$L/nhp_cuda_amp.log" 2>&1
  nvidia-cuda-mps-control -d 2>/dev/null || true
  train() {  # model data seed [overrides...]
    local m=$1 ds=$2 s=$3; shift 3
    timeout "$HARD" $PY -m behaviorseq train --model $m --data $ds --data-root "$BEHAVIORSEQ_DATA" --resume \
      --out benchmarks/_work/runs/$m-$ds-gpu12-s$s train.seed=$s train.device=cuda train.amp=false train.threads=1 \
      train.time_limit_s=$TL "$@" > "$L/$m-$ds-s$s.log" 2>&1 &
  }
  for s in 1 2 3; do
    train sracl ml-100k $s model.semantic.source=vectors model.semantic.vectors=$VEC
    train cl4srec ml-100k $s
  done
  for s in 2 3; do for m in sracl cl4srec; do  # skip a seed whose CPU run has finished (sracl_bars counts a seed once)
    [ -f benchmarks/_work/runs/$m-beauty-cpu-s$s/metrics.json ] || train $m beauty $s
  done; done
else
  TL=330; C="train.device=cuda train.amp=false train.threads=1 train.time_limit_s=$TL"
  nvidia-cuda-mps-control -d 2>/dev/null || true  # already up when batch 1 ran first on the same machine
  for m in sasrec gru4rec; do for s in 1 2 3; do
    timeout "$HARD" $PY benchmarks/baselines.py --models $m --datasets toys --seeds $s --tag=-gpu --out gpu_${m}_toys_s$s.json \
      $C > "$L/${m}_toys_s$s.log" 2>&1 &
  done; done
  for s in 1 2 3; do
    timeout "$HARD" $PY benchmarks/baselines.py --models sracl --datasets ml-100k --seeds $s --tag=-gpu-attr \
      --out gpu_sracl_ml100k_attr_s$s.json $C model.semantic.source=attributes > "$L/sracl_ml100k_s$s.log" 2>&1 &
    timeout "$HARD" $PY benchmarks/baselines.py --models cl4srec --datasets ml-100k --seeds $s --tag=-gpu \
      --out gpu_cl4srec_ml100k_s$s.json $C > "$L/cl4srec_ml100k_s$s.log" 2>&1 &
  done
  timeout "$HARD" $PY benchmarks/baselines.py --models sracl --datasets beauty --seeds 1 --tag=-gpu --out gpu_sracl_beauty_s1.json $C > "$L/sracl_beauty_s1.log" 2>&1 &
  timeout "$HARD" $PY benchmarks/baselines.py --models cl4srec --datasets beauty --seeds 1 --tag=-gpu --out gpu_cl4srec_beauty_s1.json $C > "$L/cl4srec_beauty_s1.log" 2>&1 &
fi
wait
