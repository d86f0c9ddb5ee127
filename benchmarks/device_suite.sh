#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine (the `device` tool), in one call. Weights cannot reach that
# machine (no network, 64 MiB per call), so it builds random-weight models with the real architectures and
# tokenizers (benchmarks/random_model.py) from .devcarry/, and installs carried wheels from .whl/.
#   device run, carry [".whl", ".devcarry"]: bash benchmarks/device_suite.sh
# Prepare both folders here first (both are in .git/info/exclude, so git ignores them):
#   for m in gemma3-270m smollm2-135m; do src=$(ls -d ~/.cache/rlp-workbench/models/$m-*); mkdir -p .devcarry/$m
#     cp $src/{config.json,tokenizer_config.json,generation_config.json} .devcarry/$m/; xz -9 -c $src/tokenizer.json > .devcarry/$m/tokenizer.json.xz; done
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     transformers==5.19.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 plotly==7.1.0
# Writes suite.log and the JSON/PNG results under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
OUT="${OUT:-/tmp/device-out}"; mkdir -p "$OUT"
LOG="$OUT/suite.log"
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s) $(date +%T)" | tee -a "$LOG"
         local t0=$SECONDS; timeout "$limit" "$@" 2>&1 | grep -v -E "Loading weights|Writing model" | tee -a "$LOG"
         echo "=== rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s" | tee -a "$LOG"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
nvidia-smi -L | tee -a "$LOG"
python3 -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)" | tee -a "$LOG"
M=/tmp/models; ONLY="${ONLY:-check,sampler,scaling,reward,train,fsdp,step}"
has() { [[ ",$ONLY," == *",$1,"* ]]; }
step 120 python3 benchmarks/random_model.py .devcarry/gemma3-270m $M/gemma3-270m-random
step 60 python3 benchmarks/random_model.py .devcarry/smollm2-135m $M/smollm2-135m-random
has check && step 60 python3 benchmarks/device_check.py --model $M/gemma3-270m-random
has sampler && step 120 python3 benchmarks/sampler_backends.py --model $M/gemma3-270m-random --backends transformers \
    --G 4,16 --budgets 32,256 --positions every:24 --repeats 2 --json "$OUT/sampler_backends.json"
has scaling && step 120 python3 benchmarks/scaling.py --model $M/gemma3-270m-random --lengths 128,256,512,1024,2048 \
    --G 1,4,16 --out "$OUT/scaling"
has reward && step 120 python3 benchmarks/reward_map.py --model $M/gemma3-270m-random --engines workbench,plain --repeats 2
has train && step 120 accelerate launch --config_file configs/accelerate/gpu.yaml -m workbench.cli train configs/rlp_tiny.yaml \
    --set model $M/gemma3-270m-random --set max_steps 4 --set checkpoint_every 2 --output-dir /tmp/runs/gpu \
    && cp /tmp/runs/gpu/metrics.jsonl "$OUT/gpu_metrics.jsonl"
has fsdp && step 120 accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 -m workbench.cli train \
    configs/rlp_tiny.yaml --set model $M/smollm2-135m-random --set max_steps 3 --set checkpoint_every 3 --output-dir /tmp/runs/fsdp
has step && step 180 python3 benchmarks/train_step.py --model $M/smollm2-135m-random --engines workbench,trl --steps 3 \
    --json "$OUT/train_step.json"
echo "suite done $(date +%T)" | tee -a "$LOG"
