#!/usr/bin/env bash
# The CUDA checks and GPU benchmarks in one command, for a GPU machine (a few minutes on one H200):
#   1. cpu_cuda_agreement on the embedded default (pytest suites/gates -m gpu);
#   2. the CUDA confusion-matrix (and OOD histogram) throughput (benchmarks/metrics.py --gpu-only);
#   3. the trainer on deeplabv3_resnet50 at 512x512: bf16 + channels_last vs a plain fp32 loop
#      (benchmarks/train.py), images/s and the ratio.
# Needs an environment with segcheck installed (pip install -e ".[dev]"); nothing is downloaded.
# Exits 2 without CUDA; otherwise with the number of steps that failed (0: all ran and passed).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available on this machine; run benchmarks/gpu_check.sh on a GPU machine" >&2
    exit 2
fi
failed=0
step() {  # step TITLE COMMAND...: run one step, print its title, time and exit status
    echo "== $1"
    shift
    local start=$SECONDS
    "$@"
    local rc=$?
    echo "-- exit $rc, $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
step "cpu_cuda_agreement (embedded default)" \
    pytest suites/gates -m gpu -p no:cacheprovider -rA -q --segcheck-report "${OUT:-/tmp}/gpu_check_gates.json"
step "confusion matrix on CUDA (1e9 pixels)" python benchmarks/metrics.py --gpu-only --pixels 1e9
step "trainer: deeplabv3_resnet50, 512x512, bf16 + channels_last vs fp32" \
    python benchmarks/train.py --model deeplabv3_resnet50 --size 512x512 --device cuda --batch-size 16 --steps 20
echo "gpu_check: $failed step(s) failed"
exit "$failed"
