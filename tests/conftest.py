"""Shared fixtures: the bundled models load once per test session (they are the slow part)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

# The bundled models by default. A machine the weights cannot reach (a lent GPU, benchmarks/device_vllm.sh)
# points these at model directories with the same architectures and tokenizers (benchmarks/random_model.py).
GEMMA = os.environ.get("WORKBENCH_TEST_GEMMA", "gemma3-270m")
SMOLLM = os.environ.get("WORKBENCH_TEST_SMOLLM", "smollm2-135m")


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="the full suite (CI, the README's test command): also the slow tests - notebooks, training "
        "runs, resume, FSDP, TRL, lm-eval, the CLI's subprocesses",
    )


def pytest_collection_modifyitems(config, items):
    """Two tiers. `pytest` runs the fast tier: every test not marked slow (every notebook test is slow). `pytest --full`
    runs everything; an explicit `-m EXPR` chooses for itself."""
    for item in items:
        if item.get_closest_marker("notebook"):
            item.add_marker(pytest.mark.slow)
    # the lint first: a formatting slip fails in seconds, not after twenty minutes of notebooks
    items.sort(key=lambda item: item.name != "test_the_code_is_clean_under_ruff")
    if config.getoption("--full") or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_report_header(config):
    if config.getoption("--full") or config.getoption("markexpr"):
        return None
    return "fast tier: tests marked slow are left out; the full suite is `pytest --full`"


@pytest.fixture(scope="session")
def gemma_fp32():
    from workbench.models import load_model

    return load_model(GEMMA, dtype="float32")


@pytest.fixture(scope="session")
def gemma(request):
    """Gemma on the default path: dtype "auto" (bf16 where this machine computes it natively, else fp32)."""
    from workbench.hardware import choose_dtype
    from workbench.models import load_model

    if choose_dtype("auto").name == "float32":
        return request.getfixturevalue("gemma_fp32")  # the same weights: one copy in memory
    return load_model(GEMMA, dtype="auto")


@pytest.fixture(scope="session")
def gemma_bf16():
    """Gemma in bf16, for the tests of the bf16 path itself; skipped where bf16 is emulated (an AVX2-only CPU runs a
    bf16 matmul ~100x slower than fp32, a model forward 2-5x: these tests would dominate the suite there)."""
    from workbench.hardware import bf16_speedup, cpu_kind
    from workbench.models import load_model

    if bf16_speedup() < 0.2 and os.environ.get("WORKBENCH_TEST_BF16") != "1":
        pytest.skip(
            f"bf16 is not native on this CPU ({cpu_kind()}: a bf16 matmul runs at {bf16_speedup():.2f}x "
            "fp32's speed); WORKBENCH_TEST_BF16=1 runs these tests anyway"
        )
    return load_model(GEMMA, dtype="bfloat16")


@pytest.fixture(scope="session")
def smollm_fp32():
    from workbench.models import load_model

    return load_model(SMOLLM, dtype="float32")


@pytest.fixture(scope="session")
def math_doc():
    from workbench.data import find_document

    return find_document("corpus:train#math-01")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, hidden 32) with SmolLM2's real tokenizer, saved as a local model directory:
    for tests whose expected numbers are counted by hand (FLOPs, tokens) or whose subject is a mechanism
    (resuming, checkpoint files), not for any reward."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models import bundled_model_dir

    source = bundled_model_dir("smollm2-135m")
    out = tmp_path_factory.mktemp("tiny-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(source))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


# the smallest RLP run on the tiny random model: fixed-length 4-token thoughts, no evaluation, no checkpoints
TINY_RLP = dict(
    trainer="rlp",
    max_steps=1,
    docs_per_step=1,
    positions_per_doc=2,
    G=2,
    thought_tokens=4,
    min_thought_tokens=4,
    allow_eos_in_thought=False,
    max_doc_tokens=64,
    eval_data="",
    checkpoint_every=100,
    save_optimizer=False,
    progress=False,
)


@pytest.fixture(scope="session")
def tiny_rlp_config(tiny_model_dir):
    """make(output_dir, **fields): TINY_RLP on the tiny random model, with the fields a test changes."""
    from workbench.training.configs import config_from_dict

    def make(out, **extra):
        return config_from_dict({**TINY_RLP, "model": str(tiny_model_dir), "output_dir": str(out), **extra})

    return make
