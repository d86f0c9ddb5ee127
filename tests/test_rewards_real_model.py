"""The reward engine against independent, straightforward transformers computations on the real bundled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference import entropy_next, logp_next
from workbench.data import tokenize
from workbench.engine.sampler import ThoughtSampler
from workbench.engine.scorer import no_think_logp_at, no_think_scores
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import teacher_of
from workbench.rewards import reward_map

pytestmark = pytest.mark.model


def _check_against_reference(handle, ids, rm, tol):
    model = handle.model
    assert rm.thoughts, "no thoughts were sampled"
    for th in rm.thoughts:
        t = th.position
        # the scored sequence is built from ids: context, opening marker, thought, closing marker
        open_ids = rm.template.open_ids(handle.tokenizer)
        close_ids = rm.template.close_ids(handle.tokenizer)
        assert th.scored_ids == ids[:t] + open_ids + th.ids + close_ids
        with_thought = logp_next(model, th.scored_ids, ids[t])
        no_think = logp_next(model, ids[:t], ids[t])
        assert th.logp_with_thought == pytest.approx(with_thought, abs=tol)
        assert rm.no_think.logp[t] == pytest.approx(no_think, abs=tol)
    expected = np.array([th.logp_with_thought - rm.no_think.logp[th.position] for th in rm.thoughts])
    np.testing.assert_allclose(rm.rewards, expected, rtol=0, atol=1e-12)


def test_gemma_rewards_equal_plain_transformers_fp32(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 160)
    assert ids[0] == gemma_fp32.tokenizer.bos_token_id, "Gemma scores with <bos> first"
    rm = reward_map(gemma_fp32, teacher_of(gemma_fp32), ids, "random:5", SamplingConfig(G=3, thought_tokens=10, seed=3))
    assert len(rm.positions) == 5 and len(rm.thoughts) == 15
    _check_against_reference(gemma_fp32, ids, rm, tol=2e-3)


@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_smollm_rewards_equal_plain_transformers_fp32(smollm_fp32, math_doc):
    # SmolLM2 is a Llama model: no sliding-window layers, the 4D-mask path instead of the per-layer-type dict
    ids = tokenize(smollm_fp32.tokenizer, math_doc.text, 120)
    rm = reward_map(
        smollm_fp32, teacher_of(smollm_fp32), ids, "every:29", SamplingConfig(G=2, thought_tokens=8, seed=1)
    )
    _check_against_reference(smollm_fp32, ids, rm, tol=2e-3)


def test_no_think_scores_and_entropy_every_position(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 60)
    scores, _ = no_think_scores(gemma_fp32, ids)
    assert np.isnan(scores.logp[0]) and np.isnan(scores.entropy[0])
    for t in (1, 7, 30, 59):
        assert scores.logp[t] == pytest.approx(logp_next(gemma_fp32.model, ids[:t], ids[t]), abs=2e-3)
        assert scores.entropy[t] == pytest.approx(entropy_next(gemma_fp32.model, ids[:t]), abs=2e-3)


def test_no_think_logp_at_selected_positions(gemma_fp32, math_doc):
    # what an RLP step reads: the teacher's log p at a few positions, the head run at those alone
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 60)
    positions = [59, 3, 30, 1]
    logp = no_think_logp_at(gemma_fp32, ids, positions)
    for t, value in zip(positions, logp):
        assert value == pytest.approx(logp_next(gemma_fp32.model, ids[:t], ids[t]), abs=2e-3)
    with pytest.raises(WorkbenchError, match="positions"):
        no_think_logp_at(gemma_fp32, ids, [0])
    with pytest.raises(WorkbenchError, match="positions"):
        no_think_logp_at(gemma_fp32, ids, [60])


def test_greedy_thoughts_equal_generate(gemma_fp32, math_doc):
    """At temperature 0 the batched shared-prefix decode must reproduce plain generate() token for token."""
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 100)
    sampler = ThoughtSampler(gemma_fp32, config=SamplingConfig(G=1, thought_tokens=12, temperature=0.0))
    thoughts = sampler.sample(ids, [9, 50, 99])
    for th in thoughts:
        prompt = ids[: th.position] + sampler.open_ids
        with torch.no_grad():
            out = gemma_fp32.model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
        generated = out[0, len(prompt) :].tolist()
        assert generated[: th.length] == th.ids


@pytest.mark.slow
def test_marker_written_with_other_tokens_is_cut_and_rescored(gemma_fp32, math_doc):
    """With the closing marker ". " the model usually writes "." and then " The" (the space merged into the
    next word): the marker is complete only inside a token after an already-fed one. The thought is cut
    before the ".", the fed "." is hidden from the row, and the canonical marker ids are fed instead.
    The with-thought score must still equal a plain forward over scored_ids."""
    template = ThoughtTemplate(open=" (", close=". ")
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 120)
    rm = reward_map(
        gemma_fp32,
        teacher_of(gemma_fp32),
        ids,
        "every:13",
        SamplingConfig(G=4, thought_tokens=24, seed=0),
        template=template,
    )
    rewound = [th for th in rm.thoughts if th.hidden_tokens > 0]
    assert rewound, "expected thoughts whose marker was spelled with other tokens"
    assert all(th.closed_by == "marker" and ". " not in th.text for th in rewound)
    _check_against_reference(gemma_fp32, ids, rm, tol=2e-3)


def test_bf16_engine_close_to_fp32_reference(gemma_bf16, gemma_fp32, math_doc):
    ids = tokenize(gemma_bf16.tokenizer, math_doc.text, 120)
    rm = reward_map(gemma_bf16, teacher_of(gemma_bf16), ids, "every:20", SamplingConfig(G=2, thought_tokens=8))
    diffs = [th.logp_with_thought - logp_next(gemma_fp32.model, th.scored_ids, ids[th.position]) for th in rm.thoughts]
    # bf16 carries ~3 significant digits; per-score deviations stay within a fraction of a nat
    assert np.median(np.abs(diffs)) < 0.15
    assert np.max(np.abs(diffs)) < 1.0


@pytest.mark.slow
def test_same_seed_same_thoughts_other_seed_differs(gemma, math_doc):
    ids = tokenize(gemma.tokenizer, math_doc.text, 80)
    teacher = teacher_of(gemma)
    a = reward_map(gemma, teacher, ids, "every:20", SamplingConfig(G=2, thought_tokens=8, seed=5))
    b = reward_map(gemma, teacher, ids, "every:20", SamplingConfig(G=2, thought_tokens=8, seed=5))
    c = reward_map(gemma, teacher, ids, "every:20", SamplingConfig(G=2, thought_tokens=8, seed=6))
    assert [t.ids for t in a.thoughts] == [t.ids for t in b.thoughts]
    assert np.array_equal(a.rewards, b.rewards)
    assert [t.ids for t in a.thoughts] != [t.ids for t in c.thoughts]


def test_budget_zero_gives_empty_thoughts(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 50)
    rm = reward_map(gemma_fp32, teacher_of(gemma_fp32), ids, "every:10", SamplingConfig(G=1, thought_tokens=0))
    assert all(th.length == 0 and th.closed_by == "budget" for th in rm.thoughts)
    _check_against_reference(gemma_fp32, ids, rm, tol=2e-3)


def test_top_entropy_positions_are_the_highest_entropy(gemma, math_doc):
    ids = tokenize(gemma.tokenizer, math_doc.text, 80)
    rm = reward_map(gemma, teacher_of(gemma), ids, "top-entropy:5", SamplingConfig(G=1, thought_tokens=2))
    ent = rm.no_think.entropy
    chosen = set(rm.positions)
    assert len(chosen) == 5
    others = [ent[t] for t in range(1, len(ids)) if t not in chosen]
    assert min(ent[t] for t in chosen) >= max(others)


def test_dataframe_and_json_agree(gemma, math_doc):
    ids = tokenize(gemma.tokenizer, math_doc.text, 60)
    rm = reward_map(gemma, teacher_of(gemma), ids, "every:15", SamplingConfig(G=2, thought_tokens=4))
    df = rm.to_dataframe()
    js = rm.to_json()
    assert len(df) == sum(len(p["thoughts"]) for p in js["positions"]) == len(rm.thoughts)
    flat = [th["reward"] for p in js["positions"] for th in p["thoughts"]]
    np.testing.assert_allclose(df["reward"].to_numpy(), flat)
    for p in js["positions"]:
        assert js["document_ids"][p["position"]] == p["target_id"]
    assert js["teacher"].startswith("ema-teacher(gemma3-270m)")


@pytest.mark.slow
def test_chunked_batches_give_the_same_thoughts_and_scores(gemma_fp32, math_doc):
    """Splitting the rows into several batches (max_rows) must not change any thought or score (greedy)."""
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 90)
    teacher = teacher_of(gemma_fp32)
    config = SamplingConfig(G=1, thought_tokens=6, temperature=0.0)
    one = reward_map(gemma_fp32, teacher, ids, "every:11", config, max_rows=256)
    many = reward_map(gemma_fp32, teacher, ids, "every:11", config, max_rows=2)
    assert [t.ids for t in one.thoughts] == [t.ids for t in many.thoughts]
    np.testing.assert_allclose(one.rewards, many.rewards, atol=1e-4)
