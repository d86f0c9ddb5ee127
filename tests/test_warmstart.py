"""The warm start (workbench/training/warmstart_trainer.py) on the real model, and run directories as models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import SMOLLM

from workbench.data import interleave_thoughts, load_thinking_corpus, tokenize_document
from workbench.training.configs import config_from_dict


def _config(tmp_path, **extra):
    return config_from_dict(
        dict(
            trainer="warmstart",
            model=SMOLLM,
            output_dir=str(tmp_path / "warm"),
            max_steps=1,
            docs_per_step=2,
            max_doc_tokens=160,
            learning_rate=1e-4,
            eval_docs=1,
            eval_G=1,
            eval_thought_tokens=8,
            checkpoint_every=100,
            save_optimizer=False,
            progress=False,
            **extra,
        )
    )


@pytest.mark.model
@pytest.mark.parametrize("loss_on", ["thoughts", "all"])
def test_loss_at_targets_equals_the_full_forward(tmp_path, loss_on):
    """The NTP / warm-start loss (decoder, then the LM head on the trained rows only, never on padding) equals the
    cross entropy read off a plain full forward at the same positions (SmolLM2-135M, the real model), both when only
    thoughts and answers are trained and when every token is."""
    from contextlib import nullcontext

    from workbench.models import load_model
    from workbench.training.launch import trainer_for
    from workbench.training.ntp_trainer import right_padded, trained_targets

    trainer = trainer_for(_config(tmp_path, loss_on=loss_on))
    trainer.accelerator.autocast = (
        nullcontext  # fp32 here whatever this CPU's mixed precision: the rows must match exactly
    )
    plain = load_model(SMOLLM, dtype="float32").model  # the same weights (no step taken), never prepared by accelerate
    try:
        chunk = trainer.train_ids[:2]
        assert len(chunk[0]) != len(chunk[1])  # so one row is padded
        assert all((x.trained is not None) == (loss_on == "thoughts") for x in chunk)
        ids, attention = right_padded(chunk, trainer.pad_id)
        assert attention.sum().item() == sum(len(x) for x in chunk) < attention.numel()
        with torch.no_grad():
            logits, targets, rows = trainer._logits_at_targets(chunk, ids, attention)
            ours = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
            full = plain(input_ids=ids, attention_mask=attention).logits.float().log_softmax(-1)
        by_hand = -sum(full[i, t - 1, x[t]] for i, x in enumerate(chunk) for t in trained_targets(x))
        assert rows == sum(len(trained_targets(x)) for x in chunk) == logits.shape[0]
        assert torch.allclose(ours, by_hand, rtol=1e-4), (float(ours), float(by_hand))
    finally:
        trainer.close()


@pytest.mark.slow
@pytest.mark.model
def test_one_warm_start_step_and_the_run_directory_as_a_model(tmp_path):
    """One warm-start step on the real model: the embedding stays fixed, the layers move, the LM head runs on the
    spliced thoughts and answers only; the run directory then loads as a model (`load_model(RUN_DIR)`, and the CLI's
    --model RUN_DIR) with exactly the checkpoint's weights."""
    from safetensors.torch import load_file

    from workbench.engine.thought import ThoughtTemplate
    from workbench.models import load_model
    from workbench.training.checkpoints import latest_checkpoint
    from workbench.training.launch import train
    from workbench.training.trainer import read_metrics

    base = load_model(SMOLLM, dtype="float32")
    summary = train(_config(tmp_path, loss_on="thoughts"))
    run = tmp_path / "warm"
    rows = read_metrics(run)
    step = rows[1]
    assert step["step"] == 1 and torch.isfinite(torch.tensor(step["loss"]))
    tok = base.tokenizer
    docs_eval = load_thinking_corpus("eval")
    template = ThoughtTemplate()
    docs = load_thinking_corpus("train")
    spliced = [
        interleave_thoughts(tok, d, template.open_ids(tok), template.close_ids(tok), 160, train_all=False) for d in docs
    ]
    assert step["head_rows_loss"] < step["train_tokens"] / 2  # the question text is read, not predicted
    assert "eval_answer_accuracy_thinking" in rows[-1] and "eval_share_scratch" in rows[-1]
    assert summary["steps"] == 1 and any(x.trained for x in spliced)

    warm = load_model(str(run), dtype="float32")
    saved = load_file(latest_checkpoint(run) / "policy.safetensors")
    state = warm.model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    base_state = base.model.state_dict()
    embed = next(k for k in saved if "embed_tokens" in k)
    assert torch.equal(state[embed], base_state[embed])  # train_embeddings: false
    moved = [k for k in saved if "layers" in k and not torch.equal(state[k], base_state[k])]
    assert moved, "no layer weight changed in a warm-start step"
    assert warm.step == 1 and warm.name == str(run)

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "score",
            "thinking:eval",
            "--model",
            str(run),
            "--positions",
            "marked",
            "-G",
            "1",
            "--thought-tokens",
            "4",
            "--dtype",
            "float32",
            "--json",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
        env={"TQDM_DISABLE": "1", **__import__("os").environ},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["model"] == str(run) and [p["position"] for p in scores["positions"]] == list(
        tokenize_document(tok, docs_eval[0]).marked
    )
