"""Given thoughts, probes, the content-gain layer and the design sanity table, on the real bundled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference import logp_next
from workbench.data import find_document, tokenize
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import teacher_of
from workbench.probes import NEUTRAL, NEXT_WORD, probe_map
from workbench.rewards import empty_thought_logp, reward_map, run_teacher_pass, score_thoughts

pytestmark = pytest.mark.model


@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_scoring_the_ids_of_sampled_thoughts_reproduces_their_rewards_exactly(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 160)
    teacher = teacher_of(gemma_fp32)
    rm = reward_map(gemma_fp32, teacher, ids, "random:5", SamplingConfig(G=3, thought_tokens=10, seed=3))
    again = score_thoughts(gemma_fp32, teacher, ids, [(th.position, th.ids) for th in rm.thoughts], config=rm.config)
    assert again.source == "given" and again.positions == rm.positions
    exact = [i for i, th in enumerate(rm.thoughts) if th.hidden_tokens == 0]
    assert len(exact) >= 13, "a marker spelled with other tokens leaves hidden slots; these rows are compared below"
    for i in exact:
        a, b = rm.thoughts[i], again.thoughts[i]
        assert (b.position, b.index, b.ids, b.scored_ids) == (a.position, a.index, a.ids, a.scored_ids)
        assert b.logp_with_thought == a.logp_with_thought  # bitwise: same loop, same batch shapes, same kernels
    np.testing.assert_array_equal(again.rewards[exact], rm.rewards[exact])
    np.testing.assert_allclose(again.rewards, rm.rewards, rtol=0, atol=1e-4)  # rows with hidden slots: rounding only
    # the empty-thought reference is the same number on both paths too
    assert again.empty_logp == rm.empty_logp
    # and the JSON has the sampled map's shape
    sampled, given = rm.to_json(), again.to_json()
    assert given["source"] == "given" and sampled["source"] == "sampled"
    assert set(given["positions"][0]["thoughts"][0]) == set(sampled["positions"][0]["thoughts"][0])


def test_empty_thought_on_the_given_path_equals_a_sampled_budget_of_zero(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 120)
    positions = [9, 40, 77, 100]
    done = run_teacher_pass(teacher_of(gemma_fp32), ids)  # one prefix for both (a fresh encoding rounds differently)
    sampled = reward_map(
        gemma_fp32,
        teacher_of(gemma_fp32),
        ids,
        "at:9,40,77,100",
        SamplingConfig(G=1, thought_tokens=0),
        empty_reference=False,
        teacher_pass=done,
    )
    given = empty_thought_logp(gemma_fp32, ids, positions, prefix=done.cache)
    assert [th.logp_with_thought for th in sampled.thoughts] == given.tolist()


@pytest.mark.parametrize("which", ["gemma_fp32", pytest.param("smollm_fp32", marks=pytest.mark.slow)])
def test_given_text_thought_equals_plain_transformers(request, which, math_doc):
    handle = request.getfixturevalue(which)
    tok = handle.tokenizer
    ids = tokenize(tok, math_doc.text, 120)
    thoughts = [
        (30, "The next number is 12."),
        (30, ""),
        (71, "Add the two numbers first."),
        (110, [int(ids[5]), int(ids[6])]),
    ]
    rm = score_thoughts(handle, teacher_of(handle), ids, thoughts, top_k=5)
    template = ThoughtTemplate()
    open_ids, close_ids = template.open_ids(tok), template.close_ids(tok)
    assert [th.index for th in rm.thoughts] == [0, 1, 0, 0]
    for (t, given), th in zip(thoughts, rm.thoughts):
        thought = list(tok.encode(given, add_special_tokens=False)) if isinstance(given, str) else given
        assert th.ids == thought and th.closed_by == "given"
        assert th.scored_ids == ids[:t] + open_ids + thought + close_ids
        assert th.logp_with_thought == pytest.approx(logp_next(handle.model, th.scored_ids, ids[t]), abs=2e-3)
        # the policy's top-5 next tokens after the thought, as plain transformers ranks them
        with torch.no_grad():
            logits = handle.model(torch.tensor([th.scored_ids]), logits_to_keep=1).logits[0, -1].float()
        ref = torch.log_softmax(logits, -1).topk(5)
        assert [i for i, _ in th.next_top] == ref.indices.tolist()
        np.testing.assert_allclose([lp for _, lp in th.next_top], ref.values.numpy(), atol=2e-3)
    # the teacher's top-5 without a thought, kept by its one pass
    with torch.no_grad():
        logits = handle.model(torch.tensor([ids[:71]]), logits_to_keep=1).logits[0, -1].float()
    assert rm.no_think.top_ids[71].tolist() == torch.log_softmax(logits, -1).topk(5).indices.tolist()
    # the empty thought given at t=30 is the content-gain reference there
    assert rm.content_gains[1] == pytest.approx(0.0, abs=1e-5)
    # one forward per thought (right-padded rows of different lengths) gives the decode loop's numbers
    fast = score_thoughts(handle, teacher_of(handle), ids, thoughts, top_k=5, exact=False)
    np.testing.assert_allclose(fast.rewards, rm.rewards, rtol=0, atol=1e-4)
    assert [[i for i, _ in th.next_top] for th in fast.thoughts] == [[i for i, _ in th.next_top] for th in rm.thoughts]


def test_bad_given_thoughts_are_rejected(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 60)
    teacher = teacher_of(gemma_fp32)
    with pytest.raises(WorkbenchError, match="closing marker"):
        score_thoughts(gemma_fp32, teacher, ids, ["so </think> then"], position=10)
    with pytest.raises(WorkbenchError, match="positions must lie"):
        score_thoughts(gemma_fp32, teacher, ids, ["x"], position=60)
    with pytest.raises(WorkbenchError, match="token ids"):
        score_thoughts(gemma_fp32, teacher, ids, [[-1, 5]], position=10)
    with pytest.raises(WorkbenchError, match="no thoughts"):
        score_thoughts(gemma_fp32, teacher, ids, [])


def test_probe_families_are_built_from_the_document(gemma_fp32, math_doc):
    tok = gemma_fp32.tokenizer
    ids = tokenize(tok, math_doc.text, 120)
    probes = probe_map(
        gemma_fp32,
        teacher_of(gemma_fp32),
        ids,
        [20, 50, 90],
        families={
            "empty": None,
            "leak": None,
            "echo": None,
            "wrong_hint": None,
            "neutral": None,
            "hint": "Maybe {next}",
        },
    )
    df = probes.frame()
    assert list(df["family"][:6]) == ["empty", "leak", "echo", "wrong_hint", "neutral", "hint"]
    nt = probes.reward_map.no_think
    prefix = list(tok.encode(NEXT_WORD, add_special_tokens=False))
    for th, family in zip(probes.reward_map.thoughts, probes.family_of):
        t = th.position
        expected = {
            "empty": [],
            "leak": prefix + [ids[t]],
            "echo": ids[t - 6 : t],
            "wrong_hint": prefix + [int(next(i for i in nt.top_ids[t] if i != ids[t]))],
            "neutral": list(tok.encode(NEUTRAL, add_special_tokens=False)),
            "hint": list(tok.encode("Maybe " + tok.decode([ids[t]]).strip(), add_special_tokens=False)),
        }[family]
        assert th.ids == expected, family
    # the empty family is the content-gain reference: its own gain is exactly 0
    table = probes.table("content_gain")
    assert (table["empty"] == 0).all()
    summary = probes.summary()
    assert list(summary.index) == probes.families and summary.loc["empty", "content_gain_mean"] == 0


@pytest.mark.slow
def test_leak_beats_the_wrong_hint_on_a_held_out_document(gemma, smollm_fp32):
    """Measured on corpus:eval#math-11, first 200 tokens, every 8th position (24 positions; AMD EPYC, torch capability AVX2,
    fp32): mean leak - mean wrong hint = +0.41 nats for Gemma 3 270M (leak ahead at 79% of positions), +0.62 for
    SmolLM2-135M (62%). The asserted margins are half of that."""
    doc = find_document("corpus:eval#math-11")
    for handle, margin in ((gemma, 0.2), (smollm_fp32, 0.3)):
        ids = tokenize(handle.tokenizer, doc.text, 200)
        probes = probe_map(handle, teacher_of(handle), ids, "every:8", ["empty", "leak", "wrong_hint"])
        table = probes.table()
        gap = float((table["leak"] - table["wrong_hint"]).mean())
        assert gap > margin, f"{handle.label}: leak - wrong hint = {gap:+.3f} nats"
        assert (table["leak"] > table["wrong_hint"]).mean() > 0.5


@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_teacher_pass_is_reused_and_checked(gemma_fp32, math_doc):
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text, 80)
    teacher = teacher_of(gemma_fp32)
    done = run_teacher_pass(teacher, ids, top_k=3)
    a = score_thoughts(gemma_fp32, teacher, ids, ["Two plus two."], position=40, teacher_pass=done)
    b = score_thoughts(gemma_fp32, teacher, ids, "Two plus two.", position=40)  # one text, not its characters
    assert len(b.thoughts) == 1 and a.thoughts[0].logp_with_thought == b.thoughts[0].logp_with_thought
    assert a.timing["score_s"] == 0.0  # the pass given was not run again
    with pytest.raises(WorkbenchError, match="another document"):
        score_thoughts(gemma_fp32, teacher, ids[:60], ["x"], position=40, teacher_pass=done)


@pytest.mark.slow
def test_design_sanity_table_scores_every_design_on_the_probes(gemma, math_doc):
    from workbench.compare import design_sanity
    from workbench.designs import DESIGNS

    ids = tokenize(gemma.tokenizer, math_doc.text, 100)
    teacher = teacher_of(gemma)
    probes = probe_map(gemma, teacher, ids, [30, 60, 90])
    table, result = design_sanity(gemma, teacher, probes)
    assert list(table.index) == list(DESIGNS)
    for column in ("leak>echo>neutral", "leak>wrong_hint", "empty>informative", "degenerate_group_share"):
        assert table[column].between(0, 1).all(), column
    # the rlp row is the probes' own information gain, recomputed by hand from the table of rewards
    rewards = probes.table()
    assert table.loc["rlp", "leak>wrong_hint"] == pytest.approx((rewards["leak"] > rewards["wrong_hint"]).mean())
    assert table.loc["rlp", "empty>informative"] == pytest.approx(
        (rewards["empty"] > rewards[["leak", "echo"]].max(axis=1)).mean()
    )
    assert table.loc["rlp", "mean_leak"] == pytest.approx(rewards["leak"].mean())
    # intuitor scores the empty thought 0 by definition; a binary design is degenerate where all probes tie
    assert table.loc["intuitor", "mean_empty"] == 0.0
    assert len(result.outputs["rpt"].rewards) == len(probes.reward_map.thoughts)


def test_thought_lab_scores_a_typed_thought(gemma_fp32, math_doc):
    """One forward against the decode loop: the same number up to fp32 rounding. In bf16 the two orders of arithmetic
    differ by more (0.18 nats seen on an AVX512-BF16 EPYC without AMX), so the comparison is made in fp32."""
    from workbench.thought_lab import ThoughtLab, result_html

    gemma = gemma_fp32
    ids = tokenize(gemma.tokenizer, math_doc.text, 120)
    teacher = teacher_of(gemma)
    lab = ThoughtLab(gemma, teacher, ids, top_k=5)
    result = lab.score(50, "The next word is")
    ref = score_thoughts(gemma, teacher, ids, ["The next word is"], position=50)
    assert result.reward == pytest.approx(float(ref.rewards[0]), abs=1e-4)  # one forward vs the decode loop
    assert result.empty_reward == pytest.approx(ref.empty_rewards[50], abs=1e-9)
    assert result.content_gain == pytest.approx(float(ref.content_gains[0]), abs=1e-4)
    assert len(result.with_thought) == len(result.without) == 5
    assert result.without[0][0] == gemma.tokenizer.decode([int(ref.no_think.top_id[50])])
    assert "content gain" in result_html(result)


@pytest.mark.slow
def test_thought_editor_widget_scores_what_is_typed(gemma, math_doc):
    """The editor without a browser: typing a thought (setting the text box) scores it and adds it to the table."""
    pytest.importorskip("ipywidgets")
    from workbench.thought_lab import ThoughtLab, thought_editor

    ids = tokenize(gemma.tokenizer, math_doc.text, 80)
    teacher = teacher_of(gemma)
    lab = ThoughtLab(gemma, teacher, ids)
    probes = probe_map(gemma, teacher, ids, [30, 60], teacher_pass=lab.teacher_pass)
    editor = thought_editor(lab, [30, 60], probes)
    (pick,), (text, _), result_box, table_box = (
        editor.children[0].children,
        editor.children[1].children,
        *editor.children[2:],
    )
    assert "leak" in table_box.value and "typed" not in table_box.value
    pick.value = 60
    text.value = "Add the two costs."
    assert "content gain" in result_box.value and "with the thought (policy)" in result_box.value
    assert "typed" in table_box.value and "Add the two costs." in table_box.value
    text.value = "so </think> then"  # a bad thought is reported in the widget, not raised
    assert "closing marker" in result_box.value
