"""The generated thought-interleaved corpus (workbench/thinking_corpus.py) and its id-level splicing (data.py)."""

from __future__ import annotations

import json

import pytest

from workbench.data import (
    DocumentIds,
    data_dir,
    interleave_thoughts,
    load_documents,
    load_thinking_corpus,
    parse_positions,
    select_positions,
    tokenize_document,
)
from workbench.errors import WorkbenchError
from workbench.thinking_corpus import (
    DAYS,
    FAMILIES,
    NAMES,
    SPLIT_SEEDS,
    SPLIT_SIZES,
    CorpusSpec,
    generate,
    thought_style,
    write_corpus,
)
from workbench.training.warmstart_trainer import recipe_thoughts


def test_generator_is_deterministic_and_the_shipped_files_are_its_output(tmp_path):
    assert generate("train", 17, CorpusSpec(documents=20)) == generate("train", 17, CorpusSpec(documents=20))
    assert generate("train", 17, CorpusSpec(documents=20)) != generate("train", 18, CorpusSpec(documents=20))
    paths = write_corpus(tmp_path)
    for split in SPLIT_SEEDS:
        assert paths[split].read_bytes() == (data_dir() / "thinking" / f"{split}.jsonl").read_bytes(), (
            f"data/thinking/{split}.jsonl is not what the generator writes: run python -m workbench.thinking_corpus"
        )


def test_splits_are_disjoint_and_sized():
    train, held_out = load_thinking_corpus("train"), load_thinking_corpus("eval")
    assert (len(train), len(held_out)) == (SPLIT_SIZES["train"], SPLIT_SIZES["eval"])

    # no problem (question + answer) of the held-out split appears in the training split
    def problems(docs):
        return {p for d in docs for p in d.text.split("\n\n")[1:] if "?" in p}

    assert not problems(train) & problems(held_out)
    assert not {d.text for d in train} & {d.text for d in held_out}


def test_a_trimmed_corpus_draws_only_its_families_and_keeps_the_held_out_rule():
    from workbench.data import find_document, load_documents_spec

    keep = ("lookup", "difference", "groups")
    spec = "thinking:{}?families=" + ",".join(keep)
    train, held_out = load_documents_spec(spec.format("train")), load_documents_spec(spec.format("eval"))
    assert (len(train), len(held_out)) == (SPLIT_SIZES["train"], SPLIT_SIZES["eval"])
    assert {f for d in train + held_out for f in d.families} == set(keep)
    assert all(len(d.families) == len(d.answers) >= 2 for d in held_out)  # every answer is one of the kept families
    questions = {p for d in train for p in d.text.split("\n\n")[1:] if "?" in p}
    assert not questions & {p for d in held_out for p in d.text.split("\n\n")[1:] if "?" in p}
    # every family named (in any order) is the shipped corpus itself; a document reference reads the drawn one
    assert load_documents_spec("thinking:eval?families=" + ",".join(reversed(list(FAMILIES)))) == load_thinking_corpus(
        "eval"
    )
    assert find_document(spec.format("eval") + "#eval-0003") == held_out[3]
    for bad in ("thinking:eval?families=lookup,nope", "thinking:dev?families=lookup", "thinking:eval?family=lookup"):
        with pytest.raises(WorkbenchError, match="famil"):
            load_documents_spec(bad)


def test_thoughts_parse_and_sit_before_their_answers():
    docs = load_thinking_corpus("train")
    styles, families, no_thought_docs = {}, set(), 0
    for doc in docs:
        starts = {a for a, _ in doc.answers}
        assert len(doc.answer_thoughts) == len(doc.answers)
        no_thought_docs += not doc.thoughts
        for at, text, style in doc.thoughts:
            assert at in starts and text and "</think>" not in text and "<think>" not in text
            # the evaluation reads a sampled thought's style back this way (a slip is a scratchpad in style)
            assert thought_style(text) == {"slip": "scratch"}.get(style, style)
            styles[style] = styles.get(style, 0) + 1
        for (a, b), options in zip(doc.answers, doc.answer_thoughts):
            options = dict(options)
            answer = doc.text[a:b].strip()
            assert options["scratch"].endswith(answer), (answer, options["scratch"])  # a scratchpad states its result
            # a slip is the scratchpad with one mistake: the same start, another one-token result at its end
            slip_result = options["slip"].split()[-1]
            assert slip_result != answer and options["slip"].split()[:2] == options["scratch"].split()[:2]
            assert len(slip_result) == len(answer) or slip_result in DAYS + NAMES, (answer, options["slip"])
            assert thought_style(options["restate"]) == "restate"
            assert thought_style(options["scratch"]) == thought_style(options["slip"]) == "scratch"
    for raw in (json.loads(line) for line in open(data_dir() / "thinking" / "train.jsonl")):
        families.update(raw["families"])
    assert families == set(FAMILIES)
    assert 0.2 < styles["restate"] / sum(styles.values()) < 0.4
    assert 0.15 < styles["slip"] / (styles["slip"] + styles["scratch"]) < 0.35
    assert 0.05 < no_thought_docs / len(docs) < 0.3  # some documents keep ordinary text with no thought


def test_answers_are_spread_over_the_digits():
    digits = [d.text[a:b] for d in load_thinking_corpus("train") for a, b in d.answers if d.text[a:b].isdigit()]
    shares = {str(k): digits.count(str(k)) / len(digits) for k in range(10)}
    assert max(shares.values()) < 0.15 and min(shares.values()) > 0.04, shares  # no digit is a safe guess


def test_marked_positions_spec():
    assert str(parse_positions("marked")) == "marked" and str(parse_positions("marked:2")) == "marked:2"
    assert select_positions("marked", 20, marked=[3, 9, 30]) == [3, 9]
    assert len(select_positions("marked:1", 20, seed=1, marked=[3, 9])) == 1
    with pytest.raises(WorkbenchError, match="marked answers"):
        select_positions("marked", 20)


def test_bad_answer_fields_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "Answer: 4.", "answers": [[8, 99]]}) + "\n")
    with pytest.raises(WorkbenchError, match=r"bad.jsonl:1: \"answers\""):
        load_documents(path)
    path.write_text(json.dumps({"text": "Answer: 4.", "thoughts": [{"at": "x", "text": "2 + 2"}]}) + "\n")
    with pytest.raises(WorkbenchError, match=r"\"thoughts\""):
        load_documents(path)


@pytest.mark.model
@pytest.mark.parametrize(
    "model", [pytest.param("gemma3-270m", marks=pytest.mark.slow), "smollm2-135m"]
)  # gemma: full suite
def test_splicing_builds_the_sequence_rlp_scores(model):
    """Every answer is one token in both tokenizers, and the warm start's ids are ids[:t] + open + thought + close +
    ids[t:] at each thought's answer token t: the sequence RLP scores when it samples that thought there."""
    from transformers import AutoTokenizer

    from workbench.engine.thought import ThoughtTemplate
    from workbench.models import bundled_model_dir

    tok = AutoTokenizer.from_pretrained(str(bundled_model_dir(model)))
    template = ThoughtTemplate()
    open_ids, close_ids = template.open_ids(tok), template.close_ids(tok)
    for doc in load_thinking_corpus("eval")[:30]:
        plain = tokenize_document(tok, doc)
        assert isinstance(plain, DocumentIds) and len(plain.marked) == len(doc.answers)
        for t, (a, b) in zip(plain.marked, doc.answers):
            assert tok.decode([plain[t]]) == doc.text[a:b]  # one token, exactly the answer
        spliced = interleave_thoughts(tok, doc, open_ids, close_ids, train_all=False)
        expected, last = [], 0
        by_char = {a: t for t, (a, _) in zip(plain.marked, doc.answers)}
        for at, text, _ in doc.thoughts:
            t = by_char[at]
            expected += plain[last:t] + open_ids + tok.encode(text, add_special_tokens=False) + close_ids
            last = t
        expected += plain[last:]
        assert list(spliced) == expected
        assert [spliced[t] for t in spliced.marked] == [plain[t] for t in plain.marked]  # answers moved with the splice
        inserted = sum(
            len(open_ids) + len(tok.encode(x, add_special_tokens=False)) + len(close_ids) for _, x, _ in doc.thoughts
        )
        assert len(spliced.trained) == inserted + len(plain.marked)
        assert set(spliced.marked) <= set(spliced.trained)
        only_scratch = interleave_thoughts(tok, doc, open_ids, close_ids, thoughts=recipe_thoughts(doc, ["scratch"]))
        with_restatements = interleave_thoughts(
            tok, doc, open_ids, close_ids, thoughts=recipe_thoughts(doc, ["scratch", "restate"])
        )
        assert only_scratch.trained is None and len(only_scratch) <= len(with_restatements)
        # without slips in the recipe, the answer's correct scratchpad stands in for a slip (the corpus before slips)
        scratch_of = {a: dict(options)["scratch"] for (a, _), options in zip(doc.answers, doc.answer_thoughts)}
        no_slips = interleave_thoughts(
            tok, doc, open_ids, close_ids, thoughts=recipe_thoughts(doc, ["scratch", "restate"])
        )
        expected, last = [], 0
        for at, text, style in doc.thoughts:
            t = by_char[at]
            text = scratch_of[at] if style == "slip" else text
            expected += plain[last:t] + open_ids + tok.encode(text, add_special_tokens=False) + close_ids
            last = t
        assert list(no_slips) == expected + plain[last:]
        # a read-only slip is spliced in, but none of its text tokens is a target; the answer after it is
        read_only = interleave_thoughts(tok, doc, open_ids, close_ids, read_only=["slip"])
        assert list(read_only) == list(spliced)
        slips = [x for _, x, style in doc.thoughts if style == "slip"]
        slip_tokens = sum(len(tok.encode(x, add_special_tokens=False)) for x in slips)
        if slips:
            assert len(read_only.trained) == len(read_only) - 1 - slip_tokens
            assert set(read_only.marked) <= set(read_only.trained)
        else:
            assert read_only.trained is None


@pytest.mark.parametrize(
    "text, style",
    [
        ("So 4", "guess"),
        ("4", "guess"),
        ("So Monday.", "guess"),
        ("The answer is 4", "guess"),
        ("Answer: Pablo", "guess"),
        ("I think it is a big number", "guess"),
        ("the white box holds 7", "scratch"),
        ("6 plus 2: 7 is 1, 8 is 2. So 8", "scratch"),
        ("The question asks how many", "restate"),
        # sampled after 12 RLP steps at a 16-token budget: a restatement, whatever the numbers after it
        ("the question asks about the yellow box.\n\n2. The blue box holds", "restate"),
    ],
)
def test_a_scratchpad_needs_a_counted_step(text, style):
    """A bare guess ("So 4") is not a scratchpad: the style needs at least one step that works with a number."""
    assert thought_style(text) == style


def test_style_stats_count_reward_and_budget_by_style():
    from workbench.thinking_corpus import style_stats

    out = style_stats(
        ["5 is 1, 10 is 2. So 2", "So 3", "The question asks", "5 is 1, 10 is"],
        [1.0, -1.0, 0.5, -3.0],
        ["marker", "marker", "marker", "budget"],
        prefix="eval_",
    )
    assert out["eval_n_scratch"] == 2 and out["eval_n_guess"] == 1 and out["eval_n_restate"] == 1
    assert out["eval_reward_scratch_mean"] == -1.0 and out["eval_share_scratch_at_budget"] == 0.5
    assert out["eval_reward_guess_mean"] == -1.0 and out["eval_share_restate_at_budget"] == 0.0
