#!/usr/bin/env bash
# The vLLM backend on a lent GPU machine (the `device` tool): its tests and its benchmarks, in one call.
#
# That machine has torch 2.11.0+cu130 and no vllm, no network, and takes at most 64 MiB of files per call.
# vllm 0.26.0 is the last release built against torch 2.11 (CUDA 13); its wheel is 290 MiB, so it travels
# trimmed and split over consecutive calls on one warm machine (the folder .vdev/ is in .git/info/exclude):
#   1. here: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#        --platform manylinux_2_28_x86_64 -d /tmp/vw vllm==0.26.0
#      drop what a dense model on Hopper does not load (FA2 kernels: FA3 runs there; the MoE kernels, imported
#      under suppress(ImportError); the Rust frontend binary), leaving 112 MiB:
#        zip -d vllm-0.26.0-*.whl vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/_moe_C_stable_libtorch.abi3.so vllm/vllm-rs
#      plus the Python packages vllm imports that the image lacks (23 MiB of wheels, pip download --no-deps) and
#      .whl/ (benchmarks/device_suite.sh); tar them as vllm.zip + whl/*.whl and split: split -b 56M bundle.tar .vdev/p
#   2. device run, carry [".vdev/paa"]: mkdir -p /tmp/vc && cp .vdev/p* /tmp/vc/
#      device run, carry [".vdev/pab"]: the same (within 30 s: the machine stays warm, /tmp with it)
#   3. device run, carry [".vdev/pac", ".devcarry"]: DEADLINE=<seconds> bash benchmarks/device_vllm.sh
# Writes vllm.log and the JSON results under $OUT. Steps that would not end before DEADLINE are skipped.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0
export VLLM_USE_FLASHINFER_SAMPLER=0  # flashinfer (not carried) is imported by the top-p sampler unless this is 0
OUT="${OUT:-/tmp/device-out}"; mkdir -p "$OUT"
LOG="$OUT/vllm.log"; DEADLINE="${DEADLINE:-560}"
step() { local limit=$1; shift
         if (( SECONDS + limit > DEADLINE )); then limit=$((DEADLINE - SECONDS)); fi
         if (( limit < 30 )); then echo "=== skipped (deadline): $*" | tee -a "$LOG"; return; fi
         echo "=== $* (limit ${limit}s) $(date +%T)" | tee -a "$LOG"
         local t0=$SECONDS; timeout "$limit" "$@" 2>&1 | grep -v -E "Loading weights|Writing model" | tee -a "$LOG"
         echo "=== rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s" | tee -a "$LOG"; }
mkdir -p /tmp/vc /tmp/vb && cp .vdev/p* /tmp/vc/ 2>/dev/null
cat /tmp/vc/p* | tar -x -C /tmp/vb || { echo "bundle incomplete: $(ls /tmp/vc)" | tee -a "$LOG"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/vb/whl/*.whl \
    && python3 -m zipfile -e /tmp/vb/vllm.zip /tmp/site && export PYTHONPATH=/tmp/site:$PWD || exit 1
nvidia-smi -L | tee -a "$LOG"
python3 -c "import torch, transformers, vllm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)" 2>&1 | tail -3 | tee -a "$LOG"
M=/tmp/models
export WORKBENCH_TEST_GEMMA=$M/gemma3-270m-random WORKBENCH_TEST_SMOLLM=$M/smollm2-135m-random
[ -d $M/gemma3-270m-random ] || step 90 python3 benchmarks/random_model.py .devcarry/gemma3-270m $M/gemma3-270m-random
[ -d $M/smollm2-135m-random ] || step 60 python3 benchmarks/random_model.py .devcarry/smollm2-135m $M/smollm2-135m-random
step 200 python3 benchmarks/sampler_backends.py --model $M/gemma3-270m-random --backends transformers,vllm,vllm:vllm \
    --G 4,16 --budgets 32,256 --positions every:24 --repeats 2 --json "$OUT/sampler_backends_vllm.json"
step 220 python3 -m pytest -q -m vllm -p no:cacheprovider tests/test_vllm_backend.py -rs
step 160 python3 benchmarks/train_step.py --model $M/smollm2-135m-random --engines workbench,workbench-vllm --steps 3 \
    --json "$OUT/train_step_vllm.json"
echo "done $(date +%T) after ${SECONDS} s" | tee -a "$LOG"
