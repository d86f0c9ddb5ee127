"""Shared fixtures: the bundled models load once per test session (they are the slow part)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

# The bundled models by default. A machine the weights cannot reach (a lent GPU, benchmarks/device_vllm.sh)
# points these at model directories with the same architectures and tokenizers (benchmarks/random_model.py).
GEMMA = os.environ.get("WORKBENCH_TEST_GEMMA", "gemma3-270m")
SMOLLM = os.environ.get("WORKBENCH_TEST_SMOLLM", "smollm2-135m")


@pytest.fixture(scope="session")
def gemma_fp32():
    from workbench.models import load_model

    return load_model(GEMMA, dtype="float32")


@pytest.fixture(scope="session")
def gemma_bf16():
    from workbench.models import load_model

    return load_model(GEMMA, dtype="bfloat16")


@pytest.fixture(scope="session")
def smollm_fp32():
    from workbench.models import load_model

    return load_model(SMOLLM, dtype="float32")


@pytest.fixture(scope="session")
def math_doc():
    from workbench.data import find_document

    return find_document("math-01")
