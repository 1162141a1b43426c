#!/usr/bin/env bash
# The GPU half of docs/gpu.md as ONE device call: every run of the gpu preset trained and sampled on the box.
#   here, first:   .venv/bin/python -m ldlm.tools.gpu_run --preset gpu --carry .gpu      (the frozen LM, the token arrays)
#   device call:   command "bash scripts/gpu_job.sh", carry [".gpu"], timeout_s 390
#   back in $OUT:  gpu_run.tar.gz, model.tar.gz, gpu_job.log   ->  make reproduce ... GPU_OUT=<that folder>
# Runs go side by side on the one GPU; none starts after 270 s (--stop-after), so the job ends inside the 390 s
# limit with every finished run packed (exit 3 if some did not start). A second call on the still-warm machine
# continues: finished runs (runs/gpu_run-gpu, kept between calls) are reused, not retrained. Two calls and the
# machine's start fit the loan's 15 minutes.
set -uo pipefail
: "${OUT:?OUT is the device tool's folder for the files that come back}"
if [ ! -d .gpu/site ] || [ ! -d .gpu/cache/tokens ]; then
    echo "error: no .gpu/ here: build it (python -m ldlm.tools.gpu_run --preset gpu --carry .gpu) and carry it" >&2
    exit 2
fi
# TRANSFORMERS_VERBOSITY: the carried frozen LM lacks the blocks above the layer read, and each load would list them
export PYTHONPATH="$PWD:$PWD/.gpu/site" LDLM_CACHE="$PWD/.gpu/cache" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m ldlm.tools.gpu_run --preset "${PRESET:-gpu}" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_job.log"
