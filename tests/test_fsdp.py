"""Training under FSDP2 (configs/accelerate/fsdp.yaml), run here on two CPU processes (gloo).

accelerate shards with FSDP only on accelerators, so `tests/fsdp_cpu_train.py` switches it to its FSDP2 path on
CPU. A tiny Llama (SmolLM2's tokenizer, random weights) keeps this fast; what is checked is the sharded
machinery: the rollout copy and the EMA teacher built from gathered weights, whole-tensor checkpoints, and resume
(model and optimizer state scattered back into shards). Reference: the same run under DDP, where every process
holds whole parameters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.training.trainer import TIMING_KEYS, merge_process_rows, read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed"),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from workbench.models import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _torchrun(script: list[str], config: Path, out: Path, *extra: str, **env_extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *script,
        "train",
        str(config),
        "--output-dir",
        str(out),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "WORKBENCH_COMPILE": "0", **env_extra}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in read_metrics(run)]


def _checkpoint(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / "checkpoints" / f"step-{step:06d}"
    return {f.stem: load_file(f) for f in folder.glob("*.safetensors")}


def test_merge_process_rows():
    rows = [
        {
            "step": 3,
            "reward_mean": -1.0,
            "reward_max": 2.0,
            "contexts": 4,
            "thoughts": 16,
            "peak_rss_mb": 900.0,
            "train_tokens_per_s": 10.0,
            "note": "a",
        },
        {
            "step": 3,
            "reward_mean": -3.0,
            "reward_max": 5.0,
            "contexts": 4,
            "thoughts": 16,
            "peak_rss_mb": 1000.0,
            "train_tokens_per_s": 30.0,
            "note": "b",
        },
    ]
    assert merge_process_rows(rows) == {
        "step": 3,
        "reward_mean": -2.0,
        "reward_max": 5.0,
        "contexts": 8,
        "thoughts": 32,
        "peak_rss_mb": 1000.0,
        "train_tokens_per_s": 40.0,
        "note": "a",
    }
    assert merge_process_rows(rows[:1]) == rows[0]


@pytest.mark.model
def test_fsdp2_training_matches_ddp_and_resumes(tmp_path, tiny_llama):
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        f"trainer: rlp\nmodel: {tiny_llama}\nmax_steps: 2\ndocs_per_step: 1\npositions_per_doc: 2\nG: 2\n"
        "thought_tokens: 6\nlearning_rate: 1.0e-3\neval_every: 100\neval_docs: 1\neval_positions: every:120\n"
        "eval_G: 2\ncheckpoint_every: 1\nkeep_last: 2\nmixed_precision: 'no'\nprogress: false\n"
    )
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    _torchrun(["-m", "workbench.cli"], config, ddp)
    gathers = tmp_path / "gathers"
    _torchrun([str(REPO / "tests" / "fsdp_cpu_train.py")], config, fsdp, WORKBENCH_COUNT_GATHERS=str(gathers))
    assert "policy sharded with FSDP2 across 2 processes" in (fsdp / "train.log").read_text()
    # one gather of the whole policy at the start (EMA, teacher and rollout copies) and one per optimizer step,
    # shared by the EMA update, the teacher drift and the rollout refresh
    for rank in (0, 1):
        assert int(Path(f"{gathers}.{rank}").read_text()) == 1 + 2, rank
    assert "sharded" not in (ddp / "train.log").read_text()

    # the same run: step 1 samples with the same weights; after that, reduce-scatter vs all-reduce rounding only
    a, b = _rows(ddp), _rows(fsdp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2]
    assert a[1]["contexts"] == b[1]["contexts"] == 2 * 2 and a[1]["thoughts"] == 2 * 2 * 2  # both processes' rows
    assert a[1]["reward_mean"] == pytest.approx(b[1]["reward_mean"], abs=1e-5)
    for key in ("reward_mean", "loss", "grad_norm", "teacher_drift"):
        assert a[2][key] == pytest.approx(b[2][key], rel=1e-3, abs=1e-5), key

    # checkpoints hold whole tensors (loadable without a process group), equal to DDP's, and training moved them
    ddp_ckpt, fsdp_ckpt = _checkpoint(ddp, 2), _checkpoint(fsdp, 2)
    first = _checkpoint(ddp, 1)
    assert set(fsdp_ckpt) == set(ddp_ckpt) and "teacher" in fsdp_ckpt
    for part in ddp_ckpt:
        assert fsdp_ckpt[part].keys() == ddp_ckpt[part].keys(), part
        for name, tensor in ddp_ckpt[part].items():
            assert fsdp_ckpt[part][name].shape == tensor.shape, name
            torch.testing.assert_close(fsdp_ckpt[part][name], tensor, atol=1e-5, rtol=1e-4)
    moved = max(float((ddp_ckpt["policy"][n] - first["policy"][n]).abs().max()) for n in first["policy"])
    assert moved > 1e-4

    # a crash after checkpoint 1: resuming under FSDP2 scatters model, optimizer and teacher back and repeats step 2
    shutil.rmtree(fsdp / "checkpoints" / "step-000002")
    (fsdp / "summary.json").unlink()
    _torchrun([str(REPO / "tests" / "fsdp_cpu_train.py")], config, fsdp, "--resume")
    assert _rows(fsdp) == b
    resumed = _checkpoint(fsdp, 2)
    for part in fsdp_ckpt:
        for name, tensor in fsdp_ckpt[part].items():
            torch.testing.assert_close(resumed[part][name], tensor, atol=0, rtol=0)
