"""Reward designs: hand-checkable cases, modifier invariants (hypothesis), and the real bundled model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reference import logp_next
from workbench.compare import compare_designs, group_stats, parse_designs
from workbench.data import tokenize
from workbench.designs import (
    DESIGNS,
    DesignInput,
    clip,
    delta,
    flip,
    floored,
    group_centred,
    length_budget,
    reasoning_pattern,
    register_design,
)
from workbench.engine.scorer import score_continuations
from workbench.engine.thought import SamplingConfig
from workbench.errors import WorkbenchError
from workbench.models import teacher_of
from workbench.rewards import reward_map

floats = st.floats(-50, 50, allow_nan=False)


def test_hand_checked_modifiers():
    assert clip(np.array([3.0, 0.5, -1.0]), 1.0).tolist() == [0.0, -0.5, -2.0]
    assert floored(np.array([3.0, -0.5, -5.6]), -1.0).tolist() == [3.0, -0.5, -1.0]
    assert delta(np.array([5.0, 3.0, 4.0])).tolist() == [2.0, -1.0, 4.0]
    assert group_centred(np.array([1.0, 3.0, 10.0, 10.0]), np.array([0, 0, 1, 1])).tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert reasoning_pattern(["First, because x = 2, then...", "nothing"]).tolist() == [4.0, 0.0]
    assert length_budget(np.array([10, 20, 30, 45]), step=0, total_steps=10, b0=20, b_min=5, gamma=0.5).tolist() == [
        1.0,
        1.0,
        0.5,
        0.0,
    ]
    # the budget shrinks with the step: at the last step B = max(5, 20 * 0.5) = 10
    assert length_budget(np.array([10, 15]), step=10, total_steps=10, b0=20, b_min=5, gamma=0.5).tolist() == [1.0, 0.5]


@given(st.lists(floats, min_size=1, max_size=30), st.floats(-10, 10))
def test_clip_never_positive_and_monotone(rewards, eta):
    r = np.array(rewards)
    out = clip(r, eta)
    assert (out <= 0).all()
    order = np.argsort(r, kind="stable")
    assert (np.diff(out[order]) >= -1e-12).all()


@given(st.lists(floats, min_size=1, max_size=30))
def test_delta_telescopes_to_the_first_reward(rewards):
    out = delta(np.array(rewards))
    assert out.sum() == pytest.approx(rewards[0], abs=1e-9)
    assert out[-1] == rewards[-1]


@given(st.lists(floats, min_size=2, max_size=30), st.integers(1, 5))
def test_group_centring_zeroes_every_group_mean(rewards, n_groups):
    r = np.array(rewards)
    groups = np.arange(len(r)) % n_groups
    out = group_centred(r, groups)
    for g in np.unique(groups):
        assert out[groups == g].mean() == pytest.approx(0.0, abs=1e-9)


@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=50), st.integers(0, 10**6))
def test_flip_keeps_binary_rewards_binary(rewards, seed):
    out = flip(np.array(rewards), 0.4, np.random.default_rng(seed))
    assert set(out.tolist()) <= {0.0, 1.0}
    assert flip(np.array(rewards), 0.0, np.random.default_rng(seed)).tolist() == rewards
    assert flip(np.array(rewards), 1.0, np.random.default_rng(seed)).tolist() == [1.0 - r for r in rewards]


def test_group_stats_degenerate_and_snr():
    groups = np.array([0, 0, 1, 1])
    s = group_stats(np.array([1.0, 1.0, 0.0, 2.0]), groups)
    assert s["degenerate_group_share"] == 0.5
    assert s["advantage_snr"] == pytest.approx(0.0 / 0.5)
    s = group_stats(np.array([0.0, 0.0, 5.0, 5.0]), groups)
    assert s["degenerate_group_share"] == 1.0 and s["advantage_snr"] is None


def test_unknown_design_is_rejected():
    assert parse_designs("all") == list(DESIGNS)
    with pytest.raises(WorkbenchError, match="unknown design"):
        parse_designs("rlp,nonsense")


@pytest.mark.slow
@pytest.mark.model
def test_continuations_and_designs_on_the_real_model(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 100)
    teacher = teacher_of(gemma_fp32)
    rm = reward_map(gemma_fp32, teacher, ids, "every:23", SamplingConfig(G=3, thought_tokens=6, seed=4))
    cs = score_continuations(gemma_fp32, ids, rm.thoughts, rm.template, n_next=3)
    for th, lp in zip(rm.thoughts, cs.logp):
        t = th.position
        ref = [logp_next(gemma_fp32.model, th.scored_ids + ids[t : t + k], ids[t + k]) for k in range(len(lp))]
        np.testing.assert_allclose(lp, ref, atol=2e-3)
    inp = DesignInput(gemma_fp32, teacher, rm)
    rlp = DESIGNS["rlp"](inp).rewards
    np.testing.assert_allclose(rlp, rm.rewards)  # the foundation's reward, unchanged
    floored_rlp = DESIGNS["rlp"](inp, floor=-1.0).rewards  # the variant: a thought costs at most 1 nat
    np.testing.assert_allclose(floored_rlp, [max(r, -1.0) for r in rm.rewards])
    # one look-ahead token, group-centred, is RLP's reward centred per position (teacher = policy at step 0)
    np.testing.assert_allclose(
        DESIGNS["quiet_star"](inp, n_true=1).rewards, group_centred(rlp, inp.groups()), atol=2e-3
    )
    np.testing.assert_allclose(DESIGNS["vr_cli_live"](inp, segment=1, threshold=-np.inf).rewards, rlp, atol=2e-3)
    # faithful VR-CLI with one token: I = 100 (1 - p_without / p_with), then the step function
    from workbench.designs import vr_cli_step

    expected = [vr_cli_step(100 * (1 - np.exp(-r))) for r in rlp]
    assert list(DESIGNS["vr_cli"](inp, segment=1).rewards) == expected
    np.testing.assert_allclose(
        DESIGNS["nover"](inp, segment=1).rewards, np.exp([th.logp_with_thought for th in rm.thoughts]), rtol=3e-3
    )
    certainty = DESIGNS["intuitor"](inp).rewards
    assert (certainty >= 0).all() and certainty.max() > 0  # a KL divergence


@pytest.mark.model
def test_compare_all_designs_and_a_user_design(gemma, math_doc):
    @register_design("thought_length")
    def thought_length(inp):
        """A user's design: longer thoughts score more (for the test only)."""
        from workbench.designs import DesignOutput

        return DesignOutput(np.array([float(th.length) for th in inp.thoughts]), 0, 0.0)

    try:
        ids = tokenize(gemma.tokenizer, math_doc.text, 80)
        result = compare_designs(
            gemma, teacher_of(gemma), ids, "every:20", SamplingConfig(G=2, thought_tokens=6), designs="all"
        )
        js = result.to_json()
        assert set(js["designs"]) == set(DESIGNS)
        for d in js["designs"].values():
            assert len(d["rewards"]) == len(result.reward_map.thoughts)
            assert {"mean", "std", "degenerate_group_share", "cost"} <= set(d)
        assert js["spearman"]["rlp"]["rlp"] == pytest.approx(1.0)
        # rlp reuses the sampling pass; the look-ahead designs and intuitor read one shared scoring pass
        costs = {n: d["cost"]["forward_tokens"] for n, d in js["designs"].items()}
        assert costs["rlp"] == 0
        assert costs["quiet_star"] == costs["vr_cli"] == costs["vr_cli_live"] == costs["nover"] == costs["intuitor"] > 0
        assert js["total_cost"]["forward_tokens"] < sum(costs.values()) + js["sampling"]["forward_tokens"] + len(ids)
    finally:
        DESIGNS.pop("thought_length", None)


def test_rpt_prefix_match_needs_a_token_boundary():
    from workbench.designs import byte_prefix_match

    truth = [b" 3", b".", b"50", b" each"]
    assert byte_prefix_match(b" 3", truth)
    assert byte_prefix_match(b" 3.50", truth)
    assert byte_prefix_match(b" 3.50 each", truth)
    assert not byte_prefix_match(b" 3.5", truth)  # a prefix of the text, but not on a token boundary
    assert not byte_prefix_match(b" 4", truth)
    assert not byte_prefix_match(b"", truth)
    assert not byte_prefix_match(b" 3.50 each and more", truth)


@pytest.mark.slow
@pytest.mark.model
def test_rpt_guess_after_the_thought_is_the_models_next_token(gemma_fp32, math_doc):
    """Greedy: the 1-token guess after the thought is the argmax of log p(. | scored_ids), checked against a
    plain forward; the reward is 1 exactly where that guess is the true next token's text."""
    import torch

    from workbench.engine.sampler import sample_after_thoughts

    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 90)
    config = SamplingConfig(G=2, thought_tokens=5, temperature=0.0)
    rm = reward_map(gemma_fp32, teacher_of(gemma_fp32), ids, "every:9", config)
    guesses = sample_after_thoughts(gemma_fp32, ids, rm.thoughts, rm.template, 3, config)
    for th, guess in zip(rm.thoughts, guesses):
        with torch.no_grad():
            out = gemma_fp32.model.generate(torch.tensor([th.scored_ids]), max_new_tokens=3, do_sample=False)
        assert guess == out[0, len(th.scored_ids) :].tolist()[: len(guess)]
    inp = DesignInput(gemma_fp32, teacher_of(gemma_fp32), rm)
    rewards = DESIGNS["rpt"](inp).rewards
    tok = gemma_fp32.tokenizer
    expected = [float(tok.decode(g[:1]) == tok.decode([ids[th.position]])) for th, g in zip(rm.thoughts, guesses)]
    assert set(rewards.tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(rewards, expected)


@pytest.mark.model
@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_pretrainzero_and_rlpt_on_the_real_model(gemma_fp32, math_doc):
    """Greedy fills: exact-match rewards agree with a direct comparison; RLPT's similarity is 1 for a perfect
    next segment and lies in [-1, 1]."""
    from workbench.designs import sentence_embedder
    from workbench.engine.sampler import sample_after_thoughts

    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 90)
    config = SamplingConfig(G=2, thought_tokens=4, temperature=0.0)
    rm = reward_map(gemma_fp32, teacher_of(gemma_fp32), ids, "every:15", config)
    inp = DesignInput(gemma_fp32, teacher_of(gemma_fp32), rm)
    tok = gemma_fp32.tokenizer
    fills = sample_after_thoughts(gemma_fp32, ids, rm.thoughts, rm.template, 2, config)
    expected = [
        float(tok.decode(f) == tok.decode(ids[th.position : th.position + 2])) for th, f in zip(rm.thoughts, fills)
    ]
    np.testing.assert_array_equal(DESIGNS["pretrainzero"](inp, span_tokens=2).rewards, expected)
    sims = DESIGNS["rlpt"](inp, segment_tokens=6).rewards
    assert ((sims >= -1.0001) & (sims <= 1.0001)).all()
    judge = sentence_embedder()
    same = judge.encode(["The total cost is $134.00.", "The total cost is $134.00."], normalize_embeddings=True)
    other = judge.encode(["Photosynthesis makes sugar from light."], normalize_embeddings=True)
    assert float(same[0] @ same[1]) == pytest.approx(1.0, abs=1e-5)
    assert float(same[0] @ other[0]) < 0.5


@pytest.mark.slow
@pytest.mark.model
def test_generative_designs_share_one_generation_exactly(gemma, math_doc):
    """Sharing the after-thought generation (one pass at the longest length) gives the same rewards as each
    design generating alone: under one seed the shorter generation is a prefix of the longer one."""
    ids = tokenize(gemma.tokenizer, math_doc.text, 80)
    rm = reward_map(gemma, teacher_of(gemma), ids, "every:20", SamplingConfig(G=2, thought_tokens=4, seed=3))
    shared = DesignInput(gemma, teacher_of(gemma), rm, prefetch_after=12)
    alone = DesignInput(gemma, teacher_of(gemma), rm)
    for name, opts in (("rpt", {"guess_tokens": 1}), ("pretrainzero", {"span_tokens": 3})):
        np.testing.assert_array_equal(DESIGNS[name](shared, **opts).rewards, DESIGNS[name](alone, **opts).rewards)
    generated, _, _ = shared.after_thoughts(12)
    three, _, _ = DesignInput(gemma, teacher_of(gemma), rm).after_thoughts(3)
    assert [g[:3] for g in generated] == three


@pytest.mark.model
@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_intuitor_equals_plain_self_certainty(gemma_fp32, math_doc):
    import torch

    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 70)
    rm = reward_map(gemma_fp32, teacher_of(gemma_fp32), ids, "every:25", SamplingConfig(G=2, thought_tokens=5, seed=2))
    rewards = DESIGNS["intuitor"](DesignInput(gemma_fp32, teacher_of(gemma_fp32), rm)).rewards
    n_open = len(rm.template.open_ids(gemma_fp32.tokenizer))
    for th, r in zip(rm.thoughts, rewards):
        if not th.ids:
            assert r == 0.0
            continue
        with torch.no_grad():
            logits = gemma_fp32.model(torch.tensor([th.scored_ids])).logits[0].float()
        start = th.position + n_open - 1  # the logits that predicted the first thought token
        logp = torch.log_softmax(logits[start : start + th.length], -1)
        kl_uniform = (-np.log(logp.shape[-1]) - logp.mean(-1)).mean().item()  # KL(U || p) per token, averaged
        assert r == pytest.approx(kl_uniform, abs=2e-3)


@pytest.mark.model
@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_rlpt_generative_judge_reads_yes_no_probabilities(gemma, smollm_fp32, math_doc):
    import torch

    from workbench.designs import JUDGE_PROMPT, judge_consistency

    scores = judge_consistency(
        smollm_fp32, ["The cost is 134 dollars.", "Cats sleep a lot."], ["The total is $134.", "The total is $134."]
    )
    assert ((scores >= 0) & (scores <= 1)).all()
    # the same number, computed the plain way for the first pair
    tok = smollm_fp32.tokenizer
    question = JUDGE_PROMPT.format(reference="The total is $134.", prediction="The cost is 134 dollars.")
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with torch.no_grad():
        p = torch.softmax(smollm_fp32.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    yes = {tok.encode(" Yes", add_special_tokens=False)[-1], tok.encode("Yes", add_special_tokens=False)[-1]}
    no = {tok.encode(" No", add_special_tokens=False)[-1], tok.encode("No", add_special_tokens=False)[-1]}
    p_yes, p_no = float(p[list(yes)].sum()), float(p[list(no)].sum())
    assert scores[0] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
    ids_doc = tokenize(gemma.tokenizer, math_doc.text, 60)
    rm = reward_map(gemma, teacher_of(gemma), ids_doc, "every:30", SamplingConfig(G=2, thought_tokens=3))
    rewards = DESIGNS["rlpt"](
        DesignInput(gemma, teacher_of(gemma), rm), segment_tokens=4, judge=smollm_fp32, threshold=0.5
    ).rewards
    assert set(rewards.tolist()) <= {0.0, 1.0}


def test_vr_cli_step_function_is_the_authors():
    from workbench.designs import percent_improvement, vr_cli_step

    assert [vr_cli_step(i) for i in (-5.0, 0.0, 0.049, 0.05, 0.99, 1.0, 1.99, 2.0, 40.0)] == [
        0.0,
        0.0,
        0.0,
        0.5,
        0.5,
        0.9,
        0.9,
        1.0,
        1.0,
    ]
    # PPL 10 without, 8 with: 20 % better
    assert percent_improvement(np.full(3, -np.log(8.0)), np.full(3, -np.log(10.0))) == pytest.approx(20.0)
    # NOVER's reward is named for what it computes: exp(-mean NLL) is the inverse perplexity
    assert "inverse perplexity" in DESIGNS["nover"].__doc__ and "own perplexity" not in DESIGNS["nover"].__doc__


@pytest.mark.slow
@pytest.mark.model
def test_vr_cli_scores_both_terms_with_the_frozen_reference(gemma_fp32, math_doc):
    """With a reference that differs from the policy, faithful VR-CLI reads both terms from the reference (checked
    against plain forwards of the reference), and vr_cli_live reads the with-thought term from the policy."""
    import torch

    from workbench.designs import percent_improvement, vr_cli_step

    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 80)
    teacher = teacher_of(gemma_fp32)
    reference = teacher_of(gemma_fp32, copy_weights=True)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in reference.model.model.layers[3].parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    rm = reward_map(gemma_fp32, teacher, ids, "at:30,55", SamplingConfig(G=2, thought_tokens=4, seed=2))
    inp = DesignInput(gemma_fp32, teacher, rm, reference=reference)
    got = DESIGNS["vr_cli"](inp, segment=2).rewards
    for th, r in zip(rm.thoughts, got):
        t = th.position
        with_ref = [logp_next(reference.model, th.scored_ids + ids[t : t + k], ids[t + k]) for k in range(2)]
        without_ref = [logp_next(reference.model, ids[: t + k], ids[t + k]) for k in range(2)]
        improvement = percent_improvement(np.array(with_ref), np.array(without_ref))
        assert r == vr_cli_step(improvement) or min(abs(improvement - x) for x in (0.05, 1.0, 2.0)) < 0.05
    live = DESIGNS["vr_cli_live"](inp, segment=1, threshold=-np.inf).rewards
    np.testing.assert_allclose(
        live, [th.logp_with_thought - rm.no_think.logp[th.position] for th in rm.thoughts], atol=2e-3
    )
