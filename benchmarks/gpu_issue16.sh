#!/usr/bin/env bash
# Issue 16's GPU measurements, prepared for a lent NVIDIA machine (device time is short: one call,
# every step with its own time limit and log, a failed step does not stop the others).
#
#   OUT=/where/logs/go WHEELS=.device/wheels DVIS_ATTN_PL_SHARED=.device/shared bash benchmarks/gpu_issue16.sh
#
# WHEELS: a folder of the wheels the device image lacks (pycocotools, fvcore, iopath, yacs,
#   termcolor, moviepy 1.0.3, proglog, decorator, imageio-ffmpeg 0.4.9, orjson ...), installed
#   with --target /tmp/site; DVIS_ATTN_PL_SHARED: a copy of shared/ holding golden/ (the golden
#   cases travel with the tree only when copied into an ignored folder that the call carries).
# STEPS (default 1,2,3,4,5) picks steps, so the run can be split over two calls of 10 minutes;
# the limits below add up to 550 s. Rehearse on a CPU first: DEVICE=cpu QUICK=1 (small sizes).
#
# 1 precision modes: deviation from the golden outputs, speed, the shipped model's val AP per mode
# 2 the R50 offline forward at 36 frames 360x640 (goal <= 0.6 s), fused vs every weight materialised
# 3 the predict loop vs the forward, R50 offline (goal <= 1.15x)
# 4 capture through the loop on ViT-L at 480x640 (goals: temporal <= 1.05x, decoder <= 1.15x, all <= 2x)
# 5 temporal rollout on the device (goal: 200 instances x 300 frames x 6 layers < 10 ms)
set -u
OUT=${OUT:?set OUT to the folder for the logs}
DEVICE=${DEVICE:-cuda}
STEPS=",${STEPS:-1,2,3,4,5},"
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl > "$OUT/00_pip.log" 2>&1
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
if [ "${QUICK:-0}" = 1 ]; then
    FRAMES=4 SIZE=120x160 VIT_FRAMES=2 VIT_SIZE=128x160 REPEATS=1
else
    FRAMES=36 SIZE=360x640 VIT_FRAMES=36 VIT_SIZE=480x640 REPEATS=3
fi
R50=configs/dvis_daq_r50_offline_ytvis19.yaml
VITL=configs/dvis_daq_vitl_offline_fishway.yaml
(nvidia-smi || true) > "$OUT/00_device.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())" >> "$OUT/00_device.txt" 2>&1

step() {  # step NUMBER NAME LIMIT_SECONDS COMMAND...
    local number=$1 name=$2 limit=$3
    shift 3
    case "$STEPS" in *",$number,"*) ;; *) return ;; esac
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/${number}_$name.log" 2>&1
    echo "step $number $name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

step 1 precision 120 python3 benchmarks/bench_precision.py --device "$DEVICE" --repeats "$REPEATS" --val-ap \
    --json "$OUT/precision.json"
step 2 r50_forward 90 python3 benchmarks/bench_inference.py --config "$R50" --frames "$FRAMES" --size "$SIZE" \
    --short-edge "${SIZE%x*}" --repeats "$REPEATS" --device "$DEVICE"
step 3 loop 120 python3 benchmarks/bench_loop.py --config "$R50" --videos 3 --frames "$FRAMES" --size "$SIZE" \
    --device "$DEVICE" --loop-only
step 4 capture_vitl 180 python3 benchmarks/bench_capture.py --config "$VITL" --videos 2 --frames "$VIT_FRAMES" \
    --size "$VIT_SIZE" --repeats 2 --device "$DEVICE"
step 5 rollout 40 python3 benchmarks/bench_rollout.py --device "$DEVICE"
