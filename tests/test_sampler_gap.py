"""The gap between the sampler's log-probs and the trainer's: the sampler reports the log p of every token it drew
(from the distribution it drew from, at the sampling temperature), the RLP step compares them with its own loss pass and
logs the gap an update that takes the importance ratio as 1 ignores."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.training.rl_math import sampler_gap


def test_sampler_gap_by_hand():
    delta = torch.tensor([0.1, -0.2, 0.0, 0.3])
    out = sampler_gap(delta)
    assert out["sampler_logp_gap_mean"] == pytest.approx(0.15)
    assert out["sampler_logp_gap_max"] == pytest.approx(0.3)
    ratios = [math.exp(x) for x in (0.1, -0.2, 0.0, 0.3)]
    mean = sum(ratios) / 4
    assert out["sampler_ratio_std"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in ratios) / 4))
    assert out["sampler_gap_tokens"] == 4 and sampler_gap(torch.zeros(0)) == {}


@pytest.mark.model
def test_the_sampler_reports_the_log_probs_it_drew_from(smollm_fp32, math_doc):
    """Each sampled token's reported log p equals log softmax(z / T) from a plain, independent forward over the same
    ids (fp32: up to kernel rounding), for the thought's tokens and the tokens that ended it."""
    import workbench as wb

    policy = smollm_fp32
    ids = wb.tokenize_document(policy.tokenizer, math_doc, 120)
    config = wb.SamplingConfig(G=2, thought_tokens=8, temperature=0.7, seed=3)
    rm = wb.reward_map(policy, wb.teacher_of(policy), ids, "every:40", config)
    template = rm.template
    open_ids = policy.tokenizer.encode(template.open, add_special_tokens=False)
    checked = 0
    for th in rm.thoughts:
        sampled = list(th.ids) + list(th.stop_ids)
        assert len(th.sampled_logps) == len(sampled)
        if not sampled:
            continue
        prefix = list(th.scored_ids[: th.position]) + open_ids
        seq = torch.tensor([prefix + sampled])
        with torch.no_grad():
            logits = policy.model(input_ids=seq).logits[0, len(prefix) - 1 : -1].float() / config.temperature
        plain = logits.log_softmax(-1).gather(1, torch.tensor(sampled)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(th.sampled_logps), plain, atol=2e-3), (th.sampled_logps, plain.tolist())
        checked += len(sampled)
    assert checked >= 8
    given = wb.score_thoughts(policy, wb.teacher_of(policy), ids, ["The next word is"], position=40)
    assert given.thoughts[0].sampled_logps == []  # nothing was sampled


def test_an_rlp_step_logs_the_gap_and_keeps_the_sampled_log_probs(tiny_model_dir, tmp_path):
    """fp32 sampling and fp32 training on the same weights: the gap is rounding, and every rollout keeps its tokens'
    sampled log-probs."""
    from workbench.training.configs import config_from_dict
    from workbench.training.launch import train

    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "run"),
            max_steps=1,
            docs_per_step=1,
            positions_per_doc=3,
            G=4,
            thought_tokens=4,
            min_thought_tokens=1,
            max_doc_tokens=64,
            eval_data="",
            checkpoint_every=100,
            save_optimizer=False,
            progress=False,
            rollout_dtype="float32",
            mixed_precision="no",
        )
    )
    run = train(cfg)["run_dir"]
    row = next(r for r in map(json.loads, open(f"{run}/metrics.jsonl")) if r["step"] == 1)
    assert row["sampler_gap_tokens"] > 0
    assert 0 <= row["sampler_logp_gap_mean"] < 1e-3 and row["sampler_ratio_std"] < 1e-3
    records = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert records and all(len(r["sampled_logps"]) >= r["length"] for r in records)
    assert all(x <= 0 for r in records for x in r["sampled_logps"])


def test_the_thinking_corpus_names_each_answers_family(tiny_model_dir):
    """The generated corpus's "families" reach Document and the tokenised document's marked positions."""
    from transformers import AutoTokenizer

    from workbench.data import load_thinking_corpus, tokenize_document

    doc = load_thinking_corpus("eval")[0]
    assert len(doc.families) == len(doc.answers) > 0
    ids = tokenize_document(AutoTokenizer.from_pretrained(tiny_model_dir), doc)
    assert list(ids.families) == list(ids.marked) and list(ids.families.values()) == list(doc.families)


def test_style_margin_by_hand():
    import pandas as pd

    from workbench.thinking_ready import style_margin

    own = pd.DataFrame(
        {
            "style": ["scratch", "scratch", "scratch", "restate", "restate", "guess"],
            "reward": [3.0, 1.0, 2.0, 0.5, 1.5, 9.0],
            "right": [True, False, True, False, False, True],
        }
    )
    m = style_margin(own)
    assert m["margin"] == pytest.approx(2.0 - 1.0) and m["n_scratch"] == 3 and m["n_restate"] == 2
    assert m["se"] == pytest.approx(math.sqrt(1.0 / 3 + 0.5 / 2)) and m["right_scratch"] == pytest.approx(2 / 3)
    assert math.isnan(style_margin(own[own["style"] != "restate"])["margin"])


def test_the_style_margin_check_refuses_rl_compute_in_one_line(tiny_model_dir, tmp_path):
    """A random model writes no scratchpads worth the name: with style_margin_check the run stops before its first
    step, saying the margin it measured (also in train.log and run.json), and trains nothing."""
    from workbench.errors import WorkbenchError
    from workbench.training.configs import config_from_dict
    from workbench.training.launch import train

    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "run"),
            max_steps=1,
            G=2,
            thought_tokens=4,
            train_data="thinking:train",
            train_positions="marked",
            eval_data="thinking:eval",
            eval_positions="marked",
            eval_thought_tokens=4,
            style_margin_check=1,
            progress=False,
        )
    )
    with pytest.raises(WorkbenchError, match=r"style margin at 1 held-out worksheets: .* not above 2 SE"):
        train(cfg)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "margin" in run["style_margin"] and "style margin" in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    assert cfg.fingerprint() == config_from_dict({**cfg.to_dict(), "style_margin_check": 0}).fingerprint()
