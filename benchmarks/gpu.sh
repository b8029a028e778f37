#!/usr/bin/env bash
# One short run of the model benchmark on a CUDA machine (see benchmarks/README.md, "Model"):
# VGGT-1B size (page4d-mask preset, random weights) at the node's settings (windows 8/4, 224 and 518 px),
# fp32 / bf16 / fp16, each SDPA backend, torch.compile'd blocks, the masked global blocks and the loading
# of a 1B checkpoint (written to the system temp folder, about 9 GiB, removed afterwards).
# Needs a CUDA build of PyTorch plus numpy, scipy, opencv-python-headless and safetensors (the project's
# .venv built with PAGE4D_TORCH_SPEC, or PYTHON=/path/to/python). Markdown on stdout, files in $OUT.
#
#   benchmarks/gpu.sh                     # about 5-10 minutes on an H100/H200-class GPU
#   PRESET=vggt-1b benchmarks/gpu.sh      # any preset name build_model accepts
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
out="${OUT:-gpu_results}"
preset="${PRESET:-page4d-mask}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
"$python" - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch (install a CUDA build of PyTorch)"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia_smi.csv"
status=0
step() {  # step NAME ARGS...: one benchmark run; a failure is reported and the next step still runs
    local name=$1
    shift
    echo "+ benchmarks/model.py --device cuda --preset $preset $*"
    "$python" benchmarks/model.py --device cuda --preset "$preset" --json "$out/$name.json" "$@" 2>&1 \
        | tee "$out/$name.md"
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "(step $name failed)"
        status=1
    fi
}
step stream --sizes 224 518 --precisions fp32 bf16 fp16 --sdpa default flash efficient cudnn --windows 3 \
    --mask-blocks
step compiled --sizes 224 518 --precisions bf16 --windows 3 --compile
step load --skip-stream --load --load-repeats 2
# The other network families at full size (random weights), at their own input-size rules.
for family in pi3 vggt-omega; do
    preset=$family step "stream_$family" --sizes 518 --precisions fp32 bf16 --windows 3
done
exit $status
