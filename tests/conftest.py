"""Shared fixtures: the bundled models load once per test session (they are the slow part)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub


@pytest.fixture(scope="session")
def gemma_fp32():
    from workbench.models import load_model

    return load_model("gemma3-270m", dtype="float32")


@pytest.fixture(scope="session")
def gemma_bf16():
    from workbench.models import load_model

    return load_model("gemma3-270m", dtype="bfloat16")


@pytest.fixture(scope="session")
def smollm_fp32():
    from workbench.models import load_model

    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture(scope="session")
def math_doc():
    from workbench.data import find_document

    return find_document("math-01")
