"""Compute accounting and the one evaluation, on a tiny random model whose counts are computed by hand here.

The tiny model (conftest.tiny_model_dir): Llama, 2 layers, hidden 32, MLP 64, 4 query / 2 key-value heads of 8,
a tied 49152 x 32 embedding, SmolLM2's tokenizer. Thoughts run to their budget (min_thought_tokens = budget, no EOS),
so every count below is exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict
from workbench.training.flops import FlopCounter, flop_counter
from workbench.training.trainer import merge_process_rows, read_metrics

H, FF, LAYERS, HEADS, KV, HD = 32, 64, 2, 4, 2, 8  # hidden, MLP width, ...


def _body_params() -> int:
    attention = H * HEADS * HD + 2 * H * KV * HD + HEADS * HD * H  # q, k, v, o (no biases)
    mlp = 3 * H * FF  # gate, up, down
    norms = 2 * H
    return LAYERS * (attention + mlp + norms) + H  # + the final norm


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from workbench.models import load_model

    return load_model(str(tiny_model_dir), dtype="float32")


def test_flop_counter_by_hand(tiny):
    counter = flop_counter(tiny.model)
    vocab = tiny.model.get_input_embeddings().weight.shape[0]
    assert counter == FlopCounter(body_params=_body_params(), head_params=vocab * H)
    assert counter.forward(10, 3) == 2 * _body_params() * 10 + 2 * vocab * H * 3
    assert counter.train(10, 3) == 3 * counter.forward(10, 3)


def test_sampler_counts_every_token_and_head_row(tiny):
    """Per thought row: the opening marker (o tokens, one head row to sample the first token), L - 1 more sampled
    tokens fed with a head row each, the L-th fed without one (the budget closes it), then the closing marker
    (c tokens, one head row to score x_t): o + L + c tokens, L + 1 head rows."""
    from workbench.data import find_document, tokenize
    from workbench.engine.prefix_cache import encode_prefix
    from workbench.engine.sampler import ThoughtSampler
    from workbench.engine.thought import SamplingConfig, ThoughtTemplate

    ids = tokenize(tiny.tokenizer, find_document("corpus:train#math-01").text, 80)
    L, G, positions = 5, 2, [30, 50]
    sampler = ThoughtSampler(
        tiny, ThoughtTemplate(), SamplingConfig(G=G, thought_tokens=L, min_thought_tokens=L, allow_eos=False, seed=3)
    )
    o, c = len(sampler.open_ids), len(sampler.close_ids)
    _, prefix = encode_prefix(tiny.model, ids[:50], 50)
    thoughts = sampler.sample(ids, positions, prefix=prefix)
    assert all(th.length == L and th.closed_by == "budget" for th in thoughts)
    rows = len(positions) * G
    assert sampler.compute.take() == (rows * (o + L + c), rows * (L + 1))
    sampler.sample(ids, positions)  # no prefix given: the sampler encodes ids[:50] itself, and counts it
    assert sampler.compute.take() == (50 + rows * (o + L + c), rows * (L + 1))


def test_merged_rows_sum_every_processs_compute():
    a = {
        "flops_step": 10.0,
        "flops_loss": 6.0,
        "fwd_tokens_loss": 4,
        "head_rows_loss": 2,
        "reward_mean": 1.0,
        "budget_tokens_step": 7,
    }
    b = {
        "flops_step": 30.0,
        "flops_loss": 20.0,
        "fwd_tokens_loss": 8,
        "head_rows_loss": 3,
        "reward_mean": 3.0,
        "budget_tokens_step": 9,
    }
    merged = merge_process_rows([a, b])
    assert merged["flops_step"] == 40.0 and merged["flops_loss"] == 26.0 and merged["fwd_tokens_loss"] == 12
    assert merged["head_rows_loss"] == 5 and merged["budget_tokens_step"] == 16
    assert merged["reward_mean"] == 2.0  # a mean stays a mean


@pytest.fixture
def _rlp_config(tiny_rlp_config):
    """conftest's TINY_RLP written to RUN_DIR/rlp."""
    return lambda run_dir, **extra: tiny_rlp_config(run_dir / "rlp", **extra)


def test_one_rlp_step_counts_by_hand(_rlp_config, tmp_path):
    from workbench.training.launch import trainer_for

    trainer = trainer_for(_rlp_config(tmp_path))
    assert trainer.packed_loss
    trainer.train()
    (row,) = [r for r in read_metrics(trainer.run_dir) if r["step"] == 1]
    (ctx,) = trainer.last_batch["contexts"]
    p1, p2 = ctx.positions
    o, c = len(trainer.open_ids), len(trainer.close_ids)
    L, rows = 4, 4
    counter = trainer.flops_of
    expected = {
        # the teacher reads ids[:p2] once, its LM head at the two positions
        "teacher": (p2, 2, counter.forward(p2, 2)),
        # the policy encodes ids[:p2] once, then the decode loop (see test_sampler_counts_every_token_and_head_row)
        "sample": (p2 + rows * (o + L + c), rows * (L + 1), counter.forward(p2 + rows * (o + L + c), rows * (L + 1))),
        # the empty thought at each position: both markers, one head row
        "score": (2 * (o + c), 2, counter.forward(2 * (o + c), 2)),
        # the packed loss pass: the prefix once, then each row's own inputs (o + L - 1), the head at the L targets;
        # forward + backward
        "loss": (p2 + rows * (o + L - 1), rows * L, counter.train(p2 + rows * (o + L - 1), rows * L)),
    }
    for kind, (tokens, heads, flops) in expected.items():
        assert (row[f"fwd_tokens_{kind}"], row[f"head_rows_{kind}"]) == (tokens, heads), kind
        assert row[f"flops_{kind}"] == pytest.approx(flops, rel=1e-12), kind
    assert row["flops_step"] == pytest.approx(sum(f for _, _, f in expected.values()), rel=1e-12)
    assert row["flops"] == row["flops_step"]
    # the paper's token budget: every rollout's sequence (context, markers, thought) + the input tokens
    assert row["tokens_rollout"] == 2 * (p1 + o + L + c) + 2 * (p2 + o + L + c)
    assert row["tokens_input"] == p1 + p2
    assert row["budget_tokens"] == row["tokens_rollout"] + row["tokens_input"]
    summary = json.loads((trainer.run_dir / "summary.json").read_text())
    assert summary["total_flops"] == row["flops"] and summary["total_budget_tokens"] == row["budget_tokens"]
    trainer.close()


@pytest.mark.parametrize("match", ["flops", "tokens"])
def test_ntp_matches_a_run_in_flops_or_tokens(tiny_model_dir, tmp_path, match):
    """An NTP step on one document of n tokens: n tokens fed, n - 1 head rows, forward + backward. It stops at the
    first step that reaches the matched run's budget."""
    from workbench.training.launch import trainer_for

    rlp = tmp_path / "rlp-run"
    rlp.mkdir()
    budget = {"flops": 5.5e9, "tokens": 150}[match]
    (rlp / "summary.json").write_text(json.dumps({"total_flops": 5.5e9, "total_budget_tokens": 150}))
    cfg = config_from_dict(
        dict(
            trainer="ntp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "ntp"),
            max_steps=50,
            docs_per_step=1,
            max_doc_tokens=64,
            eval_data="",
            checkpoint_every=100,
            save_optimizer=False,
            progress=False,
            match_run=str(rlp),
            match=match,
        )
    )
    trainer = trainer_for(cfg)
    summary = trainer.train()
    rows = [r for r in read_metrics(trainer.run_dir) if r["step"] > 0]
    for r in rows:
        n = r["train_tokens"]
        assert (r["fwd_tokens_loss"], r["head_rows_loss"]) == (n, n - 1)
        assert r["flops_step"] == pytest.approx(trainer.flops_of.train(n, n - 1), rel=1e-12)
        assert r["budget_tokens_step"] == n
    used = [r["flops" if match == "flops" else "budget_tokens"] for r in rows]
    assert used[-1] >= budget > (used[-2] if len(used) > 1 else 0)
    assert summary["stopped_by"] == "flops budget" or summary["steps"] == len(rows)
    assert json.loads((trainer.run_dir / "run.json").read_text())["compute_budget"] == [match, budget]
    trainer.close()


def test_ntp_match_needs_a_run_with_counts(tiny_model_dir, tmp_path):
    from workbench.training.launch import trainer_for

    (tmp_path / "empty").mkdir()
    cfg = config_from_dict(
        dict(
            trainer="ntp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "ntp"),
            eval_data="",
            progress=False,
            match_run=str(tmp_path / "empty"),
            match="tokens",
        )
    )
    with pytest.raises(WorkbenchError, match="no tokens count"):
        trainer_for(cfg)
    with pytest.raises(WorkbenchError, match="match must be"):
        config_from_dict(dict(trainer="ntp", match="steps"))


def test_cpt_preset_is_the_papers_cpt_optimiser():
    from workbench.training.configs import load_config

    cfg = load_config("configs/ntp_cpt_paper.yaml")
    assert cfg.adam_betas == [0.9, 0.95] and cfg.weight_decay == 0.1
    assert cfg.learning_rate == 1e-6 and cfg.min_learning_rate == 1e-7 and cfg.lr_scheduler == "cosine_with_min_lr"


def test_every_trainer_evaluates_alike():
    """The evaluation settings come from the fields every config shares: an RLP and an NTP config with the same
    shared fields evaluate identically, whatever their training settings (budget, guards, G, seed)."""
    from workbench.evaluation import EvalSettings, eval_settings, require_same_settings
    from workbench.training.configs import CONFIGS
    from workbench.training.launch import TRAINERS
    from workbench.training.trainer import Trainer

    shared = dict(eval_docs=3, eval_positions="every:40", eval_G=2, eval_thought_tokens=16, max_doc_tokens=256)
    rlp = config_from_dict(
        dict(
            trainer="rlp",
            seed=7,
            G=8,
            thought_tokens=64,
            min_thought_tokens=0,
            temperature=1.0,
            allow_eos_in_thought=False,
            **shared,
        )
    )
    ntp = config_from_dict(dict(trainer="ntp", seed=3, **shared))
    assert eval_settings(rlp) == eval_settings(ntp)
    assert eval_settings(rlp).min_thought_tokens == 1 and eval_settings(rlp).seed == 0
    # no trainer evaluates its own way
    assert all(cls.evaluate is Trainer.evaluate for cls in TRAINERS)
    assert {cls.config_class for cls in TRAINERS} == set(CONFIGS.values())  # a trainer for every kind, one each
    other = config_from_dict(dict(trainer="ntp", **{**shared, "eval_thought_tokens": 32}))
    with pytest.raises(WorkbenchError, match="thought_tokens"):
        require_same_settings({"RLP": eval_settings(rlp), "NTP": eval_settings(other)})
    assert isinstance(require_same_settings({"a": eval_settings(rlp), "b": eval_settings(ntp)}), EvalSettings)


def test_evaluate_by_hand_on_the_tiny_model(tiny):
    """eval_loss / accuracy from plain forwards; the reward is log p(with thought) - own no-think log p, the content
    gain log p(with thought) - log p(empty thought)."""
    import torch

    from workbench.data import find_document, tokenize
    from workbench.evaluation import EvalSettings, evaluate
    from workbench.rewards import reward_map

    ids = tokenize(tiny.tokenizer, find_document("corpus:eval#math-11").text, 60)
    settings = EvalSettings(positions="at:20,40", G=2, thought_tokens=3, seed=5)
    out = evaluate(tiny, [ids], settings)
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert out["eval_loss"] == pytest.approx(float(-logp.mean()), abs=1e-4)
    assert out["eval_perplexity"] == pytest.approx(float(np.exp(-float(logp.mean()))), rel=1e-4)
    accuracy = float((logits[:-1].argmax(-1) == torch.tensor(ids[1:])).double().mean())
    assert out["eval_accuracy"] == pytest.approx(accuracy)
    rm = reward_map(tiny, tiny, ids, "at:20,40", settings.sampling(), settings.template())
    with_thought = np.array([th.logp_with_thought for th in rm.thoughts])
    own = np.array([float(logp[th.position - 1]) for th in rm.thoughts])
    empty = np.array([rm.empty_logp[th.position] for th in rm.thoughts])
    assert out["eval_reward_mean"] == pytest.approx(float(np.mean(with_thought - own)), abs=1e-4)
    assert out["eval_content_gain_mean"] == pytest.approx(float(np.mean(with_thought - empty)), abs=1e-6)
    assert out["eval_thought_tokens_mean"] >= 1  # min_thought_tokens 1 by default: no empty thought


def test_answer_metrics_by_hand_on_the_tiny_model(tiny):
    """At `marked` positions the evaluation adds the end task: after each sampled thought, is the answer the model's
    most likely token (checked with a plain forward of the scored ids)? Without a thought, is it the most likely token
    once the opening marker's first token is set aside? And the share of scratchpad-style thoughts."""
    import torch

    from workbench.data import load_thinking_corpus, tokenize_document
    from workbench.evaluation import EvalSettings, evaluate
    from workbench.rewards import reward_map, run_teacher_pass
    from workbench.thinking_corpus import thought_style

    ids = tokenize_document(tiny.tokenizer, load_thinking_corpus("eval")[0])
    settings = EvalSettings(data="thinking:eval", positions="marked", G=2, thought_tokens=3, seed=5)
    out = evaluate(tiny, [ids], settings)
    rm = reward_map(
        tiny,
        tiny,
        ids,
        "marked",
        settings.sampling(),
        settings.template(),
        teacher_pass=run_teacher_pass(tiny, ids, top_k=2),
    )
    assert rm.positions == list(ids.marked) and len(rm.positions) >= 2
    right = []
    for th in rm.thoughts:
        with torch.no_grad():
            logits = tiny.model(torch.tensor([th.scored_ids])).logits[0, -1]
        right.append(int(logits.argmax()) == ids[th.position])
    assert out["eval_answer_accuracy_thinking"] == pytest.approx(float(np.mean(right)))
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0].float()
    open_first = settings.template().open_ids(tiny.tokenizer)[0]
    plain = []
    for t in rm.positions:
        row = logits[t - 1].clone()
        row[open_first] = -float("inf")
        plain.append(int(row.argmax()) == ids[t])
    assert out["eval_answer_accuracy_no_think"] == pytest.approx(float(np.mean(plain)))
    assert out["eval_share_scratch"] == pytest.approx(
        float(np.mean([thought_style(th.text) == "scratch" for th in rm.thoughts]))
    )
    assert out["eval_share_positive"] == pytest.approx(float(np.mean(rm.rewards > 0)))
    # standard errors: the G thoughts at one answer are one cluster, so the spread of the per-answer means counts
    by_answer = {t: [r for th, r in zip(rm.thoughts, right) if th.position == t] for t in rm.positions}
    means = [float(np.mean(by_answer[t])) for t in rm.positions]
    assert out["eval_answer_accuracy_thinking_se"] == pytest.approx(np.std(means, ddof=1) / np.sqrt(len(means)))
    assert out["eval_answer_accuracy_no_think_se"] == pytest.approx(np.std(plain, ddof=1) / np.sqrt(len(plain)))
    rewards_at = [
        float(np.mean([r for th, r in zip(rm.thoughts, rm.rewards) if th.position == t])) for t in rm.positions
    ]
    assert out["eval_reward_mean_se"] == pytest.approx(np.std(rewards_at, ddof=1) / np.sqrt(len(rewards_at)))
    assert out["eval_answers"] == len(rm.positions) and np.isnan(
        out["eval_loss_se"]
    )  # one document: no SE over documents
    # one record per answer, for paired comparisons of two models on the same answers
    records: list = []
    evaluate(tiny, [ids], settings, records=records)
    assert [(r["doc"], r["position"]) for r in records] == [(0, t) for t in rm.positions]
    assert [r["no_think_right"] for r in records] == [float(x) for x in plain]
    assert [r["thinking_right"] for r in records] == pytest.approx(means)
    assert [r["reward_mean"] for r in records] == pytest.approx(rewards_at)


def test_the_trainer_writes_a_reward_map_film(_rlp_config, tmp_path):
    """Every evaluation writes one frame (the first held-out document's map); the film figure has a frame per step."""
    from workbench.evaluation import read_film
    from workbench.training.launch import train
    from workbench.training_viz import reward_map_film

    summary = train(
        _rlp_config(
            tmp_path,
            max_steps=2,
            eval_every=1,
            eval_data="thinking:eval",
            eval_positions="marked",
            eval_docs=1,
            train_data="thinking:train",
            train_positions="marked",
        )
    )
    frames = read_film(summary["run_dir"])
    assert [f["step"] for f in frames] == [0, 1, 2]
    assert all(f["positions"] and f["tokens"] for f in frames)
    fig = reward_map_film(frames)
    assert [fr.name for fr in fig.frames] == ["0", "1", "2"] and fig.layout.sliders


@pytest.mark.parametrize("design", ["rpt", "vr_cli"])
def test_any_design_trains_with_the_same_loop(_rlp_config, tmp_path, design):
    """reward_design swaps the reward only: the step's rewards are the design's (rpt: 0/1; vr_cli: its step values,
    from a frozen reference), the advantages are RLOO on them, the design's extra passes are counted, and the
    degenerate-group share is logged."""
    from workbench.training.launch import trainer_for

    trainer = trainer_for(_rlp_config(tmp_path, reward_design=design, G=3))
    row = trainer.train_step(1)
    batch = trainer.last_batch
    rewards = batch["rewards"]
    allowed = {"rpt": {0.0, 1.0}, "vr_cli": {0.0, 0.5, 0.9, 1.0}}[design]
    assert set(rewards.flatten().tolist()) <= allowed
    assert not torch_equal(rewards, batch["info_gain"])  # not RLP's reward
    G = 3
    expected = G / (G - 1) * (rewards - rewards.mean(-1, keepdim=True))
    assert (batch["advantages"] - expected).abs().max() < 1e-12
    assert row["flops_design"] > 0 and row["head_rows_design"] > 0
    assert 0.0 <= row["degenerate_group_share"] <= 1.0
    assert (trainer._reference is not None) == (design == "vr_cli")
    trainer.close()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_unknown_reward_design_is_one_line():
    with pytest.raises(WorkbenchError, match="reward_design must be one of"):
        config_from_dict(dict(trainer="rlp", reward_design="nonsense"))


def test_two_runs_in_one_process_choose_their_own_mixed_precision(_rlp_config, tmp_path):
    """accelerate keeps one AcceleratorState per process; a notebook kernel (or this test session) that trains with
    mixed_precision "no" and then "bf16" must get both, not accelerate's "already initialized" error."""
    from workbench.training.launch import trainer_for

    first = trainer_for(_rlp_config(tmp_path / "a", mixed_precision="no"))
    assert first.accelerator.mixed_precision == "no"
    second = trainer_for(_rlp_config(tmp_path / "b", mixed_precision="bf16"))
    assert second.accelerator.mixed_precision == "bf16"


def test_skipping_the_start_evaluation_changes_no_weight(tiny_model_dir, tmp_path):
    """eval_at_start: false (the warm start's setting) drops the step-0 evaluation row and nothing else: the trained
    weights and every training metric are those of the same run with it, and the cache key is the same."""
    from safetensors.torch import load_file

    from workbench.training.checkpoints import latest_checkpoint
    from workbench.training.launch import trainer_for

    runs = {}
    for at_start in (True, False):
        cfg = config_from_dict(
            dict(
                trainer="ntp",
                model=str(tiny_model_dir),
                output_dir=str(tmp_path / f"ntp-{at_start}"),
                max_steps=2,
                docs_per_step=2,
                max_doc_tokens=48,
                eval_docs=1,
                eval_positions="every:16",
                eval_G=1,
                eval_thought_tokens=2,
                eval_every=100,
                checkpoint_every=100,
                save_optimizer=False,
                progress=False,
                eval_at_start=at_start,
            )
        )
        trainer = trainer_for(cfg)
        trainer.train()
        runs[at_start] = (
            cfg,
            read_metrics(trainer.run_dir),
            load_file(latest_checkpoint(trainer.run_dir) / "policy.safetensors"),
        )
        trainer.close()
    (cfg_a, rows_a, weights_a), (cfg_b, rows_b, weights_b) = runs[True], runs[False]
    assert [r["step"] for r in rows_a] == [0, 1, 2] and [r["step"] for r in rows_b] == [1, 2]
    assert "eval_reward_mean" in rows_a[0] and "eval_reward_mean" in rows_b[-1]
    assert rows_a[-1]["eval_reward_mean"] == rows_b[-1]["eval_reward_mean"]
    for a, b in zip(rows_a[1:], rows_b):
        assert (a["loss"], a["grad_norm"]) == (b["loss"], b["grad_norm"])
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert cfg_a.fingerprint() == cfg_b.fingerprint()
