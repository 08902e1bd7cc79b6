#!/usr/bin/env bash
# The GPU benchmark runs, as one script (a lent GPU machine is short-lived: one call runs everything).
#
#   benchmarks/gpu.sh smoke   # 48 images per split: every GPU code path once + the step rates
#   benchmarks/gpu.sh full    # KD SAM on Kvasir-SEG, KnowSAM (full method) on Kvasir-SEG and BUSI, in parallel
#   benchmarks/gpu.sh knowsam # KnowSAM (full method) on one dataset ($DS): (a) + (c), (b) and (d) + (e) (Mean
#                             # Teacher, + SKD) trained in parallel, then one call that takes up the finished runs
#                             # (their summaries and test evals) and writes the comparison
#
# Needs: samdistill importable (installed, or PYTHONPATH=src), a CUDA GPU, and the datasets under
# $SAMDISTILL_SHARED_DATA (e.g. copies made by benchmarks/shrink_dataset.py). Results land in
# benchmarks/results/*_gpu.{json,md}; with OUT set, they (and the run logs) are copied there too.
# KS_STEPS_KVASIR / KS_STEPS_BUSI: KnowSAM optimiser steps per run (default 600, as the CPU benchmark);
# knowsam mode: DS (dataset, default kvasir_seg), KS_STEPS (default 1000), KS_SEED (default 0; any mode);
# BUDGET: seconds after which the full run's jobs are stopped (default 520);
# KD_EPOCHS="S1 S2": KD SAM epochs (default: the CPU benchmark's); KD_EXTRA="STUDENT S1 S2": one more KD SAM
# run with another student and schedule (e.g. a cheaper student trained longer).
set -uo pipefail
mode=${1:-smoke}
export PYTHONUNBUFFERED=1
OUT=${OUT:-}
# the full method (adapters in SAM's encoder, students at 256 px, SAM decoded per class); KD ramped in over 40 %
# of the run as in the CPU benchmark (KS_KD_RAMPUP=0: constant, as published)
ks_flags=(--device cuda --adapters encoder --input-size 0 --kd-rampup "${KS_KD_RAMPUP:-0.4}" --sam-decode per_class --quiet
          --seed "${KS_SEED:-0}")  # KS_SEED: training seed (results named *_seed<N>_gpu)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
start=$(date +%s)
stamp() { echo "== $(( $(date +%s) - start )) s: $*"; }

if [ "$mode" = smoke ]; then
    python3 benchmarks/shrink_dataset.py "$SAMDISTILL_SHARED_DATA/kvasir_seg" /tmp/smoke_data/kvasir_seg \
        --max-side 320 --quality 95 --limit 48 || exit 1
    export SAMDISTILL_SHARED_DATA=/tmp/smoke_data
    stamp "kdsam smoke"
    python3 benchmarks/kdsam.py --device cuda --datasets kvasir_seg --stage1-epochs 2 --stage2-epochs 2 --quiet
    stamp "knowsam smoke"
    python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets kvasir_seg --steps 20
elif [ "$mode" = knowsam ]; then  # the three runs of one comparison at once; DS (default kvasir_seg)
    ds=${DS:-kvasir_seg}
    steps=${KS_STEPS:-1000}
    stamp "knowsam $ds, $steps steps: (a) + (c), (b) and (d) + (e) in parallel"
    python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets "$ds" --steps "$steps" --train-only \
        --variants supervised all_labels > "knowsam_${ds}_ac_gpu.log" 2>&1 &
    python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets "$ds" --steps "$steps" --train-only \
        --variants knowsam > "knowsam_${ds}_b_gpu.log" 2>&1 &
    python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets "$ds" --steps "$steps" --train-only \
        --variants meanteacher meanteacher_skd > "knowsam_${ds}_de_gpu.log" 2>&1 &
    wait
    stamp "knowsam $ds: compare the finished runs"
    python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets "$ds" --steps "$steps" > "knowsam_${ds}_gpu.log" 2>&1
    for f in knowsam_"$ds"*_gpu.log; do echo "--- $f"; grep -v Warn "$f" | tail -n 4; done
else  # everything at once (small-batch training leaves the GPU mostly idle); each job stops at the budget
    budget=${BUDGET:-520}
    left() { echo $(( budget - ($(date +%s) - start) )); }
    epochs=()
    [ -n "${KD_EPOCHS:-}" ] && read -r a b <<<"$KD_EPOCHS" && epochs=(--stage1-epochs "$a" --stage2-epochs "$b")
    stamp "kdsam kvasir_seg${KD_EXTRA:+, then $KD_EXTRA}; knowsam kvasir_seg; knowsam busi (in parallel)"
    (
        timeout "$(left)" python3 benchmarks/kdsam.py --device cuda --datasets kvasir_seg "${epochs[@]}" --quiet
        if [ -n "${KD_EXTRA:-}" ]; then
            read -r st a b <<<"$KD_EXTRA"
            stamp "kdsam kvasir_seg $st $a + $b epochs"
            timeout "$(left)" python3 benchmarks/kdsam.py --device cuda --datasets kvasir_seg --student "$st" \
                --stage1-epochs "$a" --stage2-epochs "$b" --quiet
        fi
    ) > kdsam_gpu.log 2>&1 &
    timeout "$(left)" python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets kvasir_seg \
        --steps "${KS_STEPS_KVASIR:-600}" > knowsam_kvasir_seg_gpu.log 2>&1 &
    timeout "$(left)" python3 benchmarks/knowsam.py "${ks_flags[@]}" --datasets busi --steps "${KS_STEPS_BUSI:-600}" \
        > knowsam_busi_gpu.log 2>&1 &
    wait
    for f in *_gpu.log; do echo "--- $f"; grep -v Warn "$f" | tail -n 4; done
fi
stamp "done"
if [ -n "$OUT" ]; then  # one archive: results files, and each run's metrics.csv, summary.json, log.txt
    tar czf "$OUT/gpu_results.tgz" benchmarks/results/*_gpu.json benchmarks/results/*_gpu.md benchmarks/results/*_gpu_c_curve.png \
        $(find benchmarks/results/runs -name metrics.csv -o -name summary.json -o -name log.txt) *_gpu.log 2>/dev/null
    ls -la "$OUT"
fi
