#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go (a few minutes on a recent card):
#   1. the parity suites with their networks on CUDA (SADTALKER_TEST_DEVICE=cuda; TF32 off inside),
#   2. the benchmark in float16, float32 and bfloat16 (stand-in weights at official widths): ours (phase
#      form on / off, channels-last decoder) against the official structure at 256 and 512, half
#      precision against float32, renderer frames/s and VRAM, whole generations (real-time factor)
#      with the official-width renderer, and peak RSS / VRAM for 10, 30 and 120 s of audio.
#
# Usage, from the repository root: tools/gpu_checks.sh OUT_DIR [PYTHON] [LANDMARKS_NPZ]
# The shared folder (fill.py, manifests, media, vectors) must sit beside the repository as for the tests.
# LANDMARKS_NPZ: face landmarks recorded by `python -m bench.bench --landmarks FILE --sections stages
# memory` on a machine with dlib's model, for GPU machines without it (else dlib runs). Results: OUT_DIR/<dtype>/bench.{md,json},
# OUT_DIR/cuda_parity.log; everything printed goes to stdout as well.
set -u
out=${1:?usage: tools/gpu_checks.sh OUT_DIR [PYTHON] [LANDMARKS_NPZ]}
py=${2:-python3}
landmarks=(${3:+--landmarks "$3"})
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

echo "== parity on CUDA"
SADTALKER_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider \
    tests/test_render_nets_parity.py tests/test_render_motion_parity.py tests/test_motion_parity.py \
    tests/test_render_precision.py "tests/test_pipeline_e2e.py::test_matches_the_official_run" \
    "tests/test_nets_rearranged.py::test_loader_picks_the_phase_form_and_winograd_on_the_cpu_only" \
    2>&1 | tee "$out/cuda_parity.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

common=(--device cuda --standin_dir /tmp/sadtalker_bench_standin --sizes 256 512 --batch_sizes 1 4 16
    --frames 48 --ratio_frames 24 --repeats 2 --stage_renderer official --stage_seconds 10
    --stage_preprocess full "${landmarks[@]}")
run() {
    local dtype=$1
    shift
    echo "== bench $dtype $*"
    "$py" -m bench.bench "${common[@]}" --dtype "$dtype" --out "$out/$dtype" "$@" || status=1
}
run float16 --sections arrangements precision render stages
run float32 --sections arrangements stages
run bfloat16 --sections arrangements precision
run float16 --stage_size 512 --stage_enhancer gfpgan --sections stages --out "$out/float16_512_gfpgan"
run float16 --sections memory --out "$out/float16_memory"
exit $status
